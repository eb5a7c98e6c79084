//! The one cap on a task's output and the marker a log cut at that cap ends with. The host's
//! executor applies it per attempt (its spool), the origin per task (its store); never more.

/// Default cap on one attempt's output, and on what the origin stores per task, in MiB.
pub const DEFAULT_OUTPUT_CAP_MB: u64 = 64;

/// The line a log ends with when it was cut at `cap_bytes`: it says that it was cut, where, and
/// which setting moves the cap, so nobody mistakes a cut log for a complete one.
pub fn marker(cap_bytes: u64) -> Vec<u8> {
    format!("\n[orgmesh: output cut at {cap_bytes} bytes, the cap set by executor.output_cap_mb]\n")
        .into_bytes()
}
