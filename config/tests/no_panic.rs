//! A bad config must never crash the daemon: mangle the examples every which way and parse.

use std::path::{Path, PathBuf};

use config::rx::RxConfig;
use config::tx::TxConfig;

fn example(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    std::fs::read_to_string(p).expect("read example")
}

/// Truncations, and characters replaced by something syntactically loaded; sampled with
/// co-prime strides so that a run stays around a second yet reaches every kind of line.
fn mutations(text: &str) -> impl Iterator<Item = String> + '_ {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let cut = bounds
        .clone()
        .into_iter()
        .step_by(13)
        .map(|i| text[..i].to_owned());
    let replaced = bounds.into_iter().step_by(3).flat_map(move |i| {
        let next = text[i..].chars().next().map_or(i, |c| i + c.len_utf8());
        ["\"", "=", "[", "\n", "9", "é"]
            .into_iter()
            .map(move |r| format!("{}{r}{}", &text[..i], &text[next..]))
    });
    cut.chain(replaced)
}

#[test]
fn mangled_configs_give_diagnostics_not_panics() {
    let path = Path::new("/nonexistent/x.toml");
    for (name, is_tx) in [("gateway-tx.toml", true), ("gateway-rx.toml", false)] {
        let text = example(name);
        let mut rejected = 0usize;
        for m in mutations(&text) {
            let err = if is_tx {
                TxConfig::parse(&m, path).err()
            } else {
                RxConfig::parse(&m, path).err()
            };
            if let Some(e) = err {
                rejected += 1;
                assert!(!e.diagnostics().is_empty());
                for d in e.diagnostics() {
                    assert!(d.line >= 1 && d.column >= 1, "{d}");
                    assert!(!d.message.is_empty());
                }
            }
        }
        assert!(rejected > 100, "{name}: only {rejected} mutations rejected");
    }
}
