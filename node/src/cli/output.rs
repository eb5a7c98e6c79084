//! Human output of the client commands: aligned tables and short summaries, coloured only when
//! stdout is a terminal and `NO_COLOR` is unset (<https://no-color.org>). JSON output does not
//! pass through here. Alignment is computed on the plain text, so colour never shifts a column.

use std::ffi::OsString;
use std::io::IsTerminal;

use serde_json::Value;

/// Whether to colour: only for a terminal, and never when `NO_COLOR` is set to anything
/// non-empty.
pub(super) fn color_enabled(is_terminal: bool, no_color: Option<OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// How to print for this process's stdout.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    color: bool,
}

impl Style {
    /// Decided once from stdout and the environment.
    pub(super) fn detect() -> Style {
        Style { color: color_enabled(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR")) }
    }

    #[cfg(test)]
    pub(super) fn plain() -> Style {
        Style { color: false }
    }

    #[cfg(test)]
    pub(super) fn colored() -> Style {
        Style { color: true }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !code.is_empty() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// A task status or peer state in its colour: green done/alive, red failed/dead, yellow
    /// waiting or suspect, blue moving.
    fn state(self, text: &str) -> String {
        let code = match text {
            "succeeded" | "alive" => "32",
            "failed" | "dead" => "31",
            "pending" | "suspect" | "unreachable" => "33",
            "placing" | "placed" | "running" => "34",
            "cancelled" => "2",
            _ => "",
        };
        self.paint(code, text)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One table cell: the plain text (for widths) and how to paint it.
struct Cell {
    text: String,
    kind: CellKind,
}

#[derive(Clone, Copy)]
enum CellKind {
    Plain,
    State,
    Dim,
}

impl Cell {
    fn plain(text: String) -> Cell {
        Cell { text, kind: CellKind::Plain }
    }
    fn state(text: String) -> Cell {
        Cell { text, kind: CellKind::State }
    }
    fn dim(text: String) -> Cell {
        Cell { text, kind: CellKind::Dim }
    }
}

/// Renders rows as a table with aligned columns (two spaces apart, no trailing blanks).
fn table(style: Style, header: &[&str], rows: &[Vec<Cell>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let last = header.len().saturating_sub(1);
    let head: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let pad = if i == last { 0 } else { widths[i] - h.chars().count() };
            format!("{}{}", style.bold(h), " ".repeat(pad))
        })
        .collect();
    out.push_str(head.join("  ").trim_end());
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = if i == last { 0 } else { widths[i] - c.text.chars().count() };
                let painted = match c.kind {
                    CellKind::Plain => c.text.clone(),
                    CellKind::State => style.state(&c.text),
                    CellKind::Dim => style.dim(&c.text),
                };
                format!("{painted}{}", " ".repeat(pad))
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `key  value` lines with the keys aligned.
fn pairs(style: Style, items: &[(&str, String)]) -> String {
    let width = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    items.iter().map(|(k, v)| format!("{}  {v}\n", style.dim(&format!("{k:<width$}")))).collect()
}

fn capacity(c: &Value) -> String {
    format!(
        "{}/{} slots free, cpu {}/{}m, mem {}/{} MiB, gpus {}/{}",
        s(&c["free_slots"]),
        s(&c["slots"]),
        s(&c["cpu_millis_free"]),
        s(&c["cpu_millis"]),
        s(&c["memory_mb_free"]),
        s(&c["memory_mb"]),
        s(&c["gpus_free"]),
        s(&c["gpus"])
    )
}

fn labels(v: &Value) -> String {
    let text: Vec<String> =
        v.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect()).unwrap_or_default();
    if text.is_empty() { "-".into() } else { text.join(",") }
}

pub(super) fn node(style: Style, n: &Value) -> String {
    let mut items = vec![
        ("peer id", s(&n["peer_id"])),
        ("org", style.bold(&s(&n["org"]))),
        ("name", s(&n["name"])),
        ("version", s(&n["version"])),
        ("started", s(&n["started_at"])),
        ("capacity", capacity(&n["capacity"])),
        ("labels", labels(&n["labels"])),
    ];
    if n["draining"] == true {
        items.push(("draining", style.paint("33", "yes")));
    }
    for a in n["listen_addrs"].as_array().into_iter().flatten() {
        items.push(("listen", s(a)));
    }
    pairs(style, &items)
}

pub(super) fn peers(style: Style, p: &Value) -> String {
    let rows: Vec<Vec<Cell>> = p["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let c = &p["capacity"];
            let sources: Vec<String> = p["sources"].as_array().into_iter().flatten().map(s).collect();
            vec![
                Cell::plain(s(&p["org"])),
                Cell::plain(s(&p["name"])),
                Cell::state(s(&p["state"])),
                Cell::plain(format!("{}/{}", s(&c["free_slots"]), s(&c["slots"]))),
                Cell::plain(if sources.is_empty() { "-".into() } else { sources.join(",") }),
                Cell::dim(s(&p["last_seen"])),
                Cell::dim(s(&p["peer_id"])),
            ]
        })
        .collect();
    table(style, &["ORG", "NAME", "STATE", "SLOTS", "SOURCES", "LAST SEEN", "PEER ID"], &rows)
}

pub(super) fn tasks(style: Style, t: &Value) -> String {
    let rows: Vec<Vec<Cell>> = t["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let command: String = t["spec"]["command"]
                .as_array()
                .map(|c| c.iter().map(s).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let command = if command.chars().count() > 40 {
                format!("{}…", command.chars().take(39).collect::<String>())
            } else {
                command
            };
            vec![
                Cell::plain(s(&t["id"])),
                Cell::state(s(&t["status"])),
                Cell::plain(s(&t["placement"]["org"])),
                Cell::plain(s(&t["exit_code"])),
                Cell::dim(s(&t["created_at"])),
                Cell::plain(command),
            ]
        })
        .collect();
    let mut out = table(style, &["ID", "STATUS", "ORG", "EXIT", "CREATED", "COMMAND"], &rows);
    if let Some(cursor) = t["next_cursor"].as_str() {
        out.push_str(&style.dim(&format!("(more: orgmesh tasks --cursor {cursor})\n")));
    }
    out
}

pub(super) fn task(style: Style, t: &Value) -> String {
    let mut items = vec![
        ("id", s(&t["id"])),
        ("status", style.state(&s(&t["status"]))),
        ("attempt", s(&t["attempt"])),
        ("placement", format!("{} ({})", s(&t["placement"]["org"]), s(&t["placement"]["name"]))),
        ("exit code", s(&t["exit_code"])),
    ];
    if !t["error"].is_null() {
        items.push(("error", s(&t["error"])));
    }
    items.push(("created", s(&t["created_at"])));
    items.push(("updated", s(&t["updated_at"])));
    items.push(("command", t["spec"]["command"].to_string()));
    let mut out = pairs(style, &items);
    let history = t["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<Cell>> = history
            .iter()
            .map(|a| {
                vec![
                    Cell::plain(s(&a["attempt"])),
                    Cell::plain(format!("{}/{}", s(&a["placement"]["org"]), s(&a["placement"]["name"]))),
                    Cell::dim(s(&a["placed_at"])),
                    Cell::dim(s(&a["ended_at"])),
                    Cell::plain(s(&a["outcome"])),
                ]
            })
            .collect();
        out.push_str(&table(style, &["ATTEMPT", "HOST", "PLACED", "ENDED", "OUTCOME"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_only_for_a_terminal_without_no_color() {
        assert!(color_enabled(true, None));
        assert!(!color_enabled(false, None));
        assert!(!color_enabled(true, Some("1".into())));
        // An empty NO_COLOR does not count, as no-color.org says.
        assert!(color_enabled(true, Some("".into())));
    }

    #[test]
    fn tables_align_on_plain_text_even_when_coloured() {
        let list = json!({"items": [
            {"id": "a", "status": "succeeded", "placement": {"org": "acme"}, "exit_code": 0,
             "created_at": "t1", "spec": {"command": ["echo", "hi"]}},
            {"id": "bbbb", "status": "running", "placement": null, "exit_code": null,
             "created_at": "t2", "spec": {"command": ["sleep", "1"]}},
        ], "next_cursor": null});
        let plain = tasks(Style::plain(), &list);
        assert!(!plain.contains('\x1b'), "no escape codes without colour");
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "ID    STATUS     ORG   EXIT  CREATED  COMMAND");
        assert_eq!(lines[1], "a     succeeded  acme  0     t1       echo hi");
        assert_eq!(lines[2], "bbbb  running    -     -     t2       sleep 1");
        let colored = tasks(Style::colored(), &list);
        assert!(colored.contains("\x1b[32msucceeded\x1b[0m"));
        let strip = |s: &str| {
            let mut out = String::new();
            let mut esc = false;
            for c in s.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        assert_eq!(strip(&colored), plain);
    }
}
