//! A spinner on stderr for the commands that wait (`submit --wait`, `logs -f`), drawn only when
//! stderr is a terminal, so pipes and scripts see nothing but the task's output. It shares the
//! screen with that output: before a chunk goes to stdout the spinner's line is erased, and it is
//! drawn again only at the start of a line, so it never splits a line of output.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

#[derive(Debug)]
struct State {
    message: String,
    /// The spinner's line is on the screen now.
    drawn: bool,
    /// The last output ended a line (or there was none), so a spinner line can go below it.
    at_line_start: bool,
    stopped: bool,
}

/// The spinner; a no-op when stderr is not a terminal.
#[derive(Debug, Clone)]
pub(super) struct Spinner {
    state: Option<Arc<Mutex<State>>>,
}

impl Spinner {
    /// Starts spinning with `message` if stderr is a terminal.
    pub(super) fn start(message: impl Into<String>) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner { state: None };
        }
        let state = Arc::new(Mutex::new(State {
            message: message.into(),
            drawn: false,
            at_line_start: true,
            stopped: false,
        }));
        let ticker = Arc::clone(&state);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut frame = 0usize;
            loop {
                {
                    let Ok(mut s) = ticker.lock() else { return };
                    if s.stopped {
                        return;
                    }
                    if s.at_line_start {
                        let secs = started.elapsed().as_secs();
                        let mut err = std::io::stderr().lock();
                        let _ =
                            write!(err, "\r\x1b[2K{} {} ({secs}s)", FRAMES[frame % FRAMES.len()], s.message);
                        let _ = err.flush();
                        s.drawn = true;
                    }
                }
                frame += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Spinner { state: Some(state) }
    }

    /// Whether it draws at all (stderr is a terminal).
    pub(super) fn is_active(&self) -> bool {
        self.state.is_some()
    }

    /// Writes `text` to stdout, moving the spinner out of its way.
    pub(super) fn print(&self, text: &str) {
        let guard = self.state.as_ref().and_then(|s| s.lock().ok());
        let mut guard = guard;
        if let Some(s) = guard.as_mut() {
            clear(s);
            if !text.is_empty() {
                s.at_line_start = text.ends_with('\n');
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Changes the message.
    pub(super) fn set_message(&self, message: impl Into<String>) {
        if let Some(mut s) = self.state.as_ref().and_then(|s| s.lock().ok()) {
            s.message = message.into();
        }
    }

    /// Erases the spinner for good.
    pub(super) fn stop(&self) {
        if let Some(mut s) = self.state.as_ref().and_then(|s| s.lock().ok()) {
            clear(&mut s);
            s.stopped = true;
        }
    }
}

fn clear(s: &mut State) {
    if s.drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
        s.drawn = false;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        clear(self);
    }
}
