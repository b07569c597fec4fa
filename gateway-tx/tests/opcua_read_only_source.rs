//! The OPC UA client code never calls a service that changes the server (read-only
//! towards the plant). The simulator's counters prove it at run time for the paths the tests
//! take; this checks every path in the source.

use std::path::Path;

/// async-opcua's Session methods (and request builders) of the services that write or call.
const FORBIDDEN: &[&str] = &[
    ".write(",
    "Write::new",
    ".call(",
    ".call_one(",
    "Call::new",
    ".add_nodes(",
    ".add_references(",
    ".delete_nodes(",
    ".delete_references(",
    ".history_update(",
    "HistoryUpdate::new",
    "AddNodes::new",
    "DeleteNodes::new",
];

#[test]
fn opcua_sources_call_no_writing_service() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/opcua");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/opcua") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in FORBIDDEN {
                assert!(
                    !code.contains(f),
                    "{}:{}: `{f}` calls a service that changes the server: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} files found in {}",
        dir.display()
    );
}
