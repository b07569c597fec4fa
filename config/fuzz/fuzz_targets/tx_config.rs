//! Fuzzes `TxConfig::parse` with arbitrary text: it must never panic, every rejection must be
//! located diagnostics (see `config_fuzz::check_rejection`), and an accepted config must hold
//! the ranges the daemon relies on. Input that is not UTF-8 is skipped: `TxConfig::load`
//! rejects it before parsing.
#![no_main]

use config::tx::TxConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = config_fuzz::config_path("gateway-tx.toml");
    match TxConfig::parse(text, &path) {
        Ok(c) => {
            let l = &c.link;
            assert!(l.mtu >= 576 && l.rate_bps > 0, "{l:?}");
            assert!(l.fec.data_shards >= 1 && l.fec.interleave >= 1, "{l:?}");
            assert!(!l.heartbeat_interval.is_zero() && !l.snapshot_period.is_zero());
            for d in &c.devices {
                assert!(!d.poll_interval.is_zero() && !d.timeout.is_zero(), "{d:?}");
                for t in &d.tags {
                    assert!(t.count >= 1, "{t:?}");
                    assert!(
                        u32::from(t.address) + u32::from(t.count) <= 0x1_0000,
                        "{t:?}"
                    );
                    assert!(t.scale.is_finite() && t.scale != 0.0, "{t:?}");
                    assert!(t.offset.is_finite(), "{t:?}");
                    assert!(t.deadband.is_finite() && t.deadband >= 0.0, "{t:?}");
                }
            }
        }
        Err(e) => config_fuzz::check_rejection(text, &e),
    }
});
