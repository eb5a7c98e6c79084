//! Human output of the client commands: aligned tables and short summaries. JSON output does not
//! pass through here.

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as a table with aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
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

pub(super) fn node(n: &Value) {
    println!("peer id   {}", s(&n["peer_id"]));
    println!("org       {}", s(&n["org"]));
    println!("name      {}", s(&n["name"]));
    println!("version   {}", s(&n["version"]));
    println!("started   {}", s(&n["started_at"]));
    println!("capacity  {}", capacity(&n["capacity"]));
    if let Some(addrs) = n["listen_addrs"].as_array() {
        for a in addrs {
            println!("listen    {}", s(a));
        }
    }
}

pub(super) fn peers(p: &Value) {
    let rows = p["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    let c = &p["capacity"];
                    vec![
                        s(&p["org"]),
                        s(&p["name"]),
                        s(&p["state"]),
                        format!("{}/{}", s(&c["free_slots"]), s(&c["slots"])),
                        s(&p["last_seen"]),
                        s(&p["peer_id"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ORG", "NAME", "STATE", "SLOTS", "LAST SEEN", "PEER ID"], rows);
}

pub(super) fn tasks(t: &Value) {
    let rows = t["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|t| {
                    vec![
                        s(&t["id"]),
                        s(&t["status"]),
                        s(&t["placement"]["org"]),
                        s(&t["exit_code"]),
                        s(&t["created_at"]),
                        t["spec"]["command"]
                            .as_array()
                            .map(|c| c.iter().map(s).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default()
                            .chars()
                            .take(40)
                            .collect(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "STATUS", "ORG", "EXIT", "CREATED", "COMMAND"], rows);
}

pub(super) fn task(t: &Value) {
    println!("id         {}", s(&t["id"]));
    println!("status     {}", s(&t["status"]));
    println!("attempt    {}", s(&t["attempt"]));
    println!("placement  {} ({})", s(&t["placement"]["org"]), s(&t["placement"]["name"]));
    println!("exit code  {}", s(&t["exit_code"]));
    if !t["error"].is_null() {
        println!("error      {}", s(&t["error"]));
    }
    println!("created    {}", s(&t["created_at"]));
    println!("updated    {}", s(&t["updated_at"]));
    println!("command    {}", t["spec"]["command"]);
}
