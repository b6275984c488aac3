//! A minimal QMP client for the snapshot tests: commands in order, events collected on the way.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A minimal QMP client: commands in order, events collected on the way.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub events: Vec<Value>,
}

impl Qmp {
    pub fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("QMP {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = q.read();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        q.execute("qmp_capabilities", json!({})).unwrap();
        q
    }

    pub fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP sent {line:?}: {e}"))
    }

    /// The command's `return`, or its error's `desc`.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = json!({"execute": cmd, "arguments": args});
        // One write: rvmm acts on the object at its closing brace (and `quit` closes the socket).
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .unwrap();
        loop {
            let v = self.read();
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e["desc"].as_str().unwrap_or_default().to_string());
            }
            self.events.push(v);
        }
    }

    /// Waits for MIGRATION with `status`; returns every event seen so far.
    pub fn wait_migration(&mut self, status: &str) -> Vec<String> {
        loop {
            let seen = self
                .events
                .iter()
                .any(|e| e["event"] == "MIGRATION" && e["data"]["status"] == status);
            if seen {
                return self
                    .events
                    .iter()
                    .map(|e| match e["event"].as_str() {
                        Some("MIGRATION") => format!("MIGRATION {}", e["data"]["status"]),
                        Some(other) => other.to_string(),
                        None => e.to_string(),
                    })
                    .collect();
            }
            let v = self.read();
            self.events.push(v);
        }
    }
}
