//! Live reload of gateway-tx (`Transmitter::reload_file`, what SIGHUP and `--watch` call): a
//! valid config is applied in the same session without dropping the values of unchanged tags;
//! an invalid one is refused with check-config's file:line:column:key text and the old config
//! keeps running.

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::path::{Path, PathBuf};

use common::{Chain, DEVICE, Setup, eventually};
use protocol::model::ModbusTable;
use tests::plc_sim::DEMO_TAGS;

/// A holding register no demo tag uses.
const EXTRA_ADDRESS: u16 = 900;
const EXTRA_VALUE: u16 = 4242;

fn extra_tag_name() -> String {
    format!("{DEVICE}/extra/level")
}

/// The chain's TX config with one more u16 tag on the PLC (appended to its only device).
fn with_extra_tag(toml: &str) -> String {
    format!(
        "{toml}\n[[modbus.tag]]\nname = \"{}\"\ntable = \"holding\"\naddress = {EXTRA_ADDRESS}\n\
         type = \"u16\"\n",
        extra_tag_name()
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway-tx.toml");
    std::fs::write(&path, text).expect("writing the config file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_then_removes_a_tag_in_the_same_session() {
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;
    let session = c.tx().session;
    let dir = tempfile::tempdir().expect("temporary directory");
    c.plc.handle().set_holding(EXTRA_ADDRESS, &[EXTRA_VALUE]);

    // Add a tag.
    let path = write(dir.path(), &with_extra_tag(&c.tx_toml));
    let summary = c
        .tx()
        .reload_file(&path)
        .expect("a valid reload is applied");
    assert_eq!(summary.tags, DEMO_TAGS.len() + 1);
    assert_eq!(summary.added, 1);
    assert_eq!(summary.removed, 0);
    assert_eq!(
        summary.kept_values,
        DEMO_TAGS.len(),
        "every unchanged tag keeps its current value"
    );
    for i in 0..DEMO_TAGS.len() as u32 {
        assert!(
            c.tx().table().current(i).is_some(),
            "tag {i} has its value in the new table"
        );
    }
    let mut mirror = common::Mirror::new(c.rx().modbus_addr.unwrap());
    eventually(
        "the mirror serves the new tag",
        common::CONVERGE,
        async || match mirror
            .read(ModbusTable::HoldingRegister, EXTRA_ADDRESS, 1)
            .await
        {
            Ok(Ok(words)) if words == [EXTRA_VALUE] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(c.rx().state.tag_count(), DEMO_TAGS.len() + 1);
    c.wait_mirror_matches("unchanged tags still served").await;
    assert_eq!(c.tx().session, session);
    assert_eq!(c.rx().stats().session_changes, 0, "no new session");
    assert_eq!(
        c.rx().state.link_state(),
        gateway_rx::state::LinkState::Up { session }
    );

    // Remove it again.
    let path = write(dir.path(), &c.tx_toml);
    let summary = c
        .tx()
        .reload_file(&path)
        .expect("a valid reload is applied");
    assert_eq!((summary.added, summary.removed), (0, 1));
    let name = extra_tag_name();
    eventually(
        "the removed tag leaves the receiver's catalogue",
        common::CONVERGE,
        async || {
            let cat = c.rx().state.catalogue().ok_or("no catalogue")?;
            if cat.tags().iter().any(|t| t.name == name) {
                return Err(format!("still {} tags", cat.len()));
            }
            Ok(())
        },
    )
    .await;
    assert_eq!(c.rx().state.tag_count(), DEMO_TAGS.len());
    c.wait_mirror_matches("values served after the removal")
        .await;
    assert_eq!(c.rx().stats().session_changes, 0, "no new session");
    assert_eq!(
        c.tx()
            .reloads
            .applied
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_and_everything_keeps_running() {
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;
    let session = c.tx().session;
    let hash = c.rx().state.catalogue_hash();
    let dir = tempfile::tempdir().expect("temporary directory");

    // A syntax error.
    let path = write(dir.path(), &format!("{}\n[[modbus.tag\n", c.tx_toml));
    let err = c
        .tx()
        .reload_file(&path)
        .expect_err("a syntax error is refused");
    let file = path.display().to_string();
    assert!(err.starts_with(&format!("{file}:")), "{err}");

    // Overlapping registers: one more tag on a demo tag's holding register.
    let taken = DEMO_TAGS
        .iter()
        .find(|t| t.table == ModbusTable::HoldingRegister)
        .expect("a demo tag in holding registers");
    let overlap = format!(
        "{}\n[[modbus.tag]]\nname = \"{DEVICE}/extra/clash\"\ntable = \"holding\"\n\
         address = {}\ntype = \"u16\"\n",
        c.tx_toml, taken.address
    );
    let path = write(dir.path(), &overlap);
    let err = c
        .tx()
        .reload_file(&path)
        .expect_err("overlapping tags are refused");
    assert!(err.starts_with(&format!("{file}:")), "{err}");
    assert!(err.contains("overlaps"), "{err}");
    assert!(err.contains("key `"), "{err}");
    // The same text check-config prints.
    let check = config::tx::TxConfig::load(&path).unwrap_err().to_string();
    assert_eq!(err, check);

    // A link setting that cannot change live.
    let path = write(
        dir.path(),
        &c.tx_toml.replacen("[link]\n", "[link]\nmtu = 1400\n", 1),
    );
    let err = c
        .tx()
        .reload_file(&path)
        .expect_err("a link change is refused");
    assert!(err.contains("link.mtu"), "{err}");
    assert!(err.contains("restart"), "{err}");

    assert_eq!(
        c.tx()
            .reloads
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(c.tx().table().len(), DEMO_TAGS.len());
    assert!(c.tx().link_alive());
    assert_eq!(c.tx().session, session);
    c.wait_mirror_matches("still served after the refused reloads")
        .await;
    assert_eq!(c.rx().state.catalogue_hash(), hash, "the same catalogue");
    assert_eq!(c.rx().stats().session_changes, 0);
}
