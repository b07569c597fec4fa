//! Every class of TX config error: where it is reported and what the user reads.

use std::path::Path;

use config::tx::TxConfig;
use config::{ConfigError, Diagnostic};

fn diags(src: &str) -> Vec<Diagnostic> {
    match TxConfig::parse(src, Path::new("/etc/gw/tx.toml")) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Asserts there is exactly one diagnostic, at `line:column` on `key`, containing every
/// fragment.
#[track_caller]
fn one(src: &str, line: usize, column: usize, key: &str, fragments: &[&str]) {
    let d = diags(src);
    assert_eq!(d.len(), 1, "expected one diagnostic, got:\n{}", show(&d));
    check(&d[0], line, column, key, fragments);
}

#[track_caller]
fn check(d: &Diagnostic, line: usize, column: usize, key: &str, fragments: &[&str]) {
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (line, column, key),
        "wrong place for: {d}"
    );
    assert_eq!(d.file, Path::new("/etc/gw/tx.toml"));
    for f in fragments {
        assert!(d.message.contains(f), "{f:?} not in: {d}");
    }
}

fn show(d: &[Diagnostic]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}

const LINK: &str = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n";

/// A valid link section followed by one device whose tags are `tags` (lines 6 onward).
fn with_tags(tags: &str) -> String {
    format!("{LINK}\n[[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\n{tags}")
}

#[test]
fn display_is_one_compiler_style_line_per_problem() {
    let src = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\nmtu = 100\nrate_mbit = -1\n";
    let err = TxConfig::parse(src, Path::new("/etc/gw/tx.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/gw/tx.toml:4:7: key `link.mtu`: 100 is out of range; expected an integer from \
         576 to 65535 (bytes, the link's IP packet size)\n\
         /etc/gw/tx.toml:5:13: key `link.rate_mbit`: -1 is not a usable rate; expected a \
         number of Mbit/s greater than 0 and at most 100000"
    );
}

#[test]
fn syntax_error() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = 127.0.0.1:5600\n",
        3,
        20,
        "link.destination",
        &[
            "invalid TOML",
            "put it in double quotes: \"127.0.0.1:5600\"",
        ],
    );
}

#[test]
fn duplicate_key_is_a_syntax_error_with_a_hint() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\nmtu = 1500\nmtu = 1400\n",
        5,
        1,
        "link.mtu",
        &["duplicate key", "only once per table"],
    );
}

#[test]
fn missing_link_table() {
    one(
        "[[modbus]]\nname = \"a\"\nhost = \"127.0.0.1\"\n",
        1,
        1,
        "link",
        &["missing required key `link`", "add a [link] section"],
    );
}

#[test]
fn missing_destination_points_at_the_table() {
    one(
        "# tx\n[link]\ninsecure_no_key = true\nmtu = 1500\n",
        2,
        1,
        "link.destination",
        &[
            "missing required key `destination` in [link]",
            "\"192.0.2.10:5600\"",
        ],
    );
}

#[test]
fn destination_without_port() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1\"\n",
        3,
        15,
        "link.destination",
        &["the port is missing", "\"192.0.2.10:5600\""],
    );
}

#[test]
fn destination_host_name_is_refused() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = \"rx.example.net:5600\"\n",
        3,
        15,
        "link.destination",
        &[
            "not an IP address with a port",
            "host names are not resolved",
        ],
    );
}

#[test]
fn unspecified_destination() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = \"0.0.0.0:5600\"\n",
        3,
        15,
        "link.destination",
        &["cannot be sent to"],
    );
}

#[test]
fn unknown_key_lists_valid_keys_and_suggests() {
    one(
        &format!("{LINK}heartbeat = 5\n"),
        4,
        1,
        "link.heartbeat",
        &[
            "unknown key `heartbeat`",
            "did you mean `heartbeat_ms`?",
            "valid keys in [link] are: `destination`, `bind`, `mtu`, `rate_mbit`, `key_file`, \
             `insecure_no_key`, `state_file`, `heartbeat_ms`, `catalogue_interval_s`, \
             `snapshot_period_s`, `fec`",
        ],
    );
}

#[test]
fn unknown_top_level_key() {
    one(
        &format!("colour = 1\n{LINK}"),
        1,
        1,
        "colour",
        &["valid keys in the top level are: `link`, `modbus`"],
    );
}

#[test]
fn unknown_tag_key() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"u16\"\nunits = \"rpm\"\n",
        ),
        13,
        1,
        "modbus[0].tag[0].units",
        &[
            "did you mean `unit`?",
            "valid keys in [[modbus.tag]] are: `name`, `table`",
        ],
    );
}

#[test]
fn wrong_type_says_the_expected_type() {
    one(
        &format!("{LINK}mtu = \"1500\"\n"),
        4,
        7,
        "link.mtu",
        &[
            "found a string \"1500\" where an integer is needed",
            "expected an integer from 576 to 65535",
            "write 1500 without quotes",
        ],
    );
    one(
        &format!("{LINK}mtu = 1500.0\n"),
        4,
        7,
        "link.mtu",
        &["found the float 1500.0 where an integer is needed"],
    );
    one(
        "[link]\ninsecure_no_key = true\ndestination = 5600\n",
        3,
        15,
        "link.destination",
        &["found the integer 5600 where a string is needed"],
    );
}

#[test]
fn link_given_as_value_instead_of_table() {
    one(
        "link = 5\n",
        1,
        8,
        "link",
        &["expected a table", "[link] section"],
    );
}

#[test]
fn mtu_out_of_range() {
    one(
        &format!("{LINK}mtu = 70000\n"),
        4,
        7,
        "link.mtu",
        &["70000 is out of range", "from 576 to 65535"],
    );
}

#[test]
fn ipv6_needs_mtu_1280() {
    one(
        "[link]\ninsecure_no_key = true\ndestination = \"[2001:db8::1]:5600\"\nmtu = 1000\n",
        4,
        7,
        "link.mtu",
        &["below the IPv6 minimum MTU", "from 1280 to 65535"],
    );
}

#[test]
fn bind_of_other_ip_version() {
    one(
        &format!("{LINK}bind = \"[::]:0\"\n"),
        4,
        8,
        "link.bind",
        &["different IP versions", "\"0.0.0.0\""],
    );
}

#[test]
fn rate_must_be_positive_and_carry_a_datagram() {
    one(
        &format!("{LINK}rate_mbit = 0\n"),
        4,
        13,
        "link.rate_mbit",
        &["greater than 0"],
    );
    one(
        &format!("{LINK}rate_mbit = 0.001\n"),
        4,
        13,
        "link.rate_mbit",
        &[
            "cannot carry even one 1500-byte datagram per second",
            "at least 0.012 Mbit/s",
        ],
    );
    one(
        &format!("{LINK}rate_mbit = nan\n"),
        4,
        13,
        "link.rate_mbit",
        &["not a usable rate"],
    );
}

#[test]
fn durations_out_of_range() {
    one(
        &format!("{LINK}heartbeat_ms = 0\n"),
        4,
        16,
        "link.heartbeat_ms",
        &["from 100 to 60000 (milliseconds)"],
    );
    one(
        &format!("{LINK}snapshot_period_s = 0\n"),
        4,
        21,
        "link.snapshot_period_s",
        &["from 1 to 86400 (seconds)"],
    );
}

#[test]
fn fec_group_too_many_shards() {
    one(
        &format!("{LINK}[link.fec]\ndata_shards = 4000\nrepair_shards = 100\n"),
        6,
        17,
        "link.fec.repair_shards",
        &["4000 + 100 = 4100", "at most 4096"],
    );
}

#[test]
fn fec_group_too_many_bytes_states_the_valid_shard_count() {
    one(
        &format!("{LINK}mtu = 65535\n[link.fec]\ndata_shards = 600\nrepair_shards = 0\n"),
        6,
        15,
        "link.fec.data_shards",
        &[
            "one FEC group of 600 + 0 shards of 65464 bytes (mtu 65535) is 39278400 bytes",
            "data_shards + repair_shards can be at most 512",
        ],
    );
}

#[test]
fn fec_block_too_large_states_the_valid_interleave() {
    one(
        &format!(
            "{LINK}mtu = 9000\n[link.fec]\ndata_shards = 1000\nrepair_shards = 200\ninterleave = 64\n"
        ),
        8,
        14,
        "link.fec.interleave",
        &[
            "an interleaved block of 64 groups × (1000 + 200) shards × 8930 bytes is 685824000 bytes",
            "interleave can be at most 25",
        ],
    );
    one(
        &format!(
            "{LINK}mtu = 65535\n[link.fec]\ndata_shards = 128\nrepair_shards = 64\ninterleave = 22\n"
        ),
        8,
        14,
        "link.fec.interleave",
        &["interleave can be at most 21"],
    );
}

#[test]
fn fec_ranges() {
    one(
        &format!("{LINK}[link.fec]\ninterleave = 0\n"),
        5,
        14,
        "link.fec.interleave",
        &["from 1 to 64"],
    );
    one(
        &format!("{LINK}[link.fec]\nflush_ms = 5000\n"),
        5,
        12,
        "link.fec.flush_ms",
        &["from 1 to 150 (milliseconds)"],
    );
    one(
        &format!("{LINK}[link.fec]\nblock_ms = 200\n"),
        5,
        12,
        "link.fec.block_ms",
        &["from 1 to 150 (milliseconds)"],
    );
    one(
        &format!("{LINK}[link.fec]\nflush_ms = 20\nblock_ms = 10\n"),
        6,
        12,
        "link.fec.block_ms",
        &[
            "block_ms (10 ms) is shorter than flush_ms (20 ms)",
            "at least 20",
        ],
    );
    one(
        &format!("{LINK}[link.fec]\nflush_ms = 80\n"),
        5,
        12,
        "link.fec.flush_ms",
        &["block_ms (50 ms) is shorter than flush_ms (80 ms)"],
    );
    one(
        &format!("{LINK}[link.fec]\ndata_shards = 0\n"),
        5,
        15,
        "link.fec.data_shards",
        &["from 1 to 4096"],
    );
    one(
        &format!("{LINK}[link.fec]\nfoo = 0\n"),
        5,
        1,
        "link.fec.foo",
        &[
            "valid keys in [link.fec] are: `data_shards`, `repair_shards`, `interleave`, `flush_ms`, `block_ms`",
        ],
    );
}

#[test]
fn modbus_written_as_single_table() {
    one(
        &format!("{LINK}[modbus]\nname = \"a\"\n"),
        4,
        1,
        "modbus",
        &[
            "expected an array of tables, found a table",
            "[[modbus]] section (double brackets)",
        ],
    );
}

#[test]
fn duplicate_device_names() {
    let src = format!(
        "{LINK}[[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\n[[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.2\"\n"
    );
    one(
        &src,
        8,
        8,
        "modbus[1].name",
        &[
            "duplicate device name \"plc1\", first used by modbus[0] at line 5",
            "must be unique",
        ],
    );
}

#[test]
fn device_field_errors() {
    let src = format!(
        "{LINK}[[modbus]]\nname = \"plc 1\"\nhost = \"127.0.0.1:502\"\nport = 0\nunit_id = 256\npoll_interval_ms = 5\ntimeout_ms = 0\n"
    );
    let d = diags(&src);
    assert_eq!(d.len(), 6, "{}", show(&d));
    check(
        &d[0],
        5,
        8,
        "modbus[0].name",
        &["device name \"plc 1\" is not valid", "like \"plc1\""],
    );
    check(&d[1], 6, 8, "modbus[0].host", &["put the port in `port`"]);
    check(&d[2], 7, 8, "modbus[0].port", &["from 1 to 65535"]);
    check(
        &d[3],
        8,
        11,
        "modbus[0].unit_id",
        &["256 is out of range", "from 0 to 255"],
    );
    check(
        &d[4],
        9,
        20,
        "modbus[0].poll_interval_ms",
        &["from 10 to 86400000"],
    );
    check(&d[5], 10, 14, "modbus[0].timeout_ms", &["from 1 to 60000"]);
}

#[test]
fn missing_host() {
    one(
        &format!("{LINK}[[modbus]]\nname = \"plc1\"\n"),
        4,
        1,
        "modbus[0].host",
        &["missing required key `host` in [[modbus]]"],
    );
}

#[test]
fn duplicate_tag_names_across_devices() {
    let src = format!(
        "{LINK}[[modbus]]\nname = \"a\"\nhost = \"127.0.0.1\"\n\
         [[modbus.tag]]\nname = \"x/y\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n\
         [[modbus]]\nname = \"b\"\nhost = \"127.0.0.1\"\n\
         [[modbus.tag]]\nname = \"x/y\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n"
    );
    one(
        &src,
        16,
        8,
        "modbus[1].tag[0].name",
        &[
            "duplicate tag name \"x/y\", first used by modbus[0].tag[0] at line 8",
            "unique across the whole file",
        ],
    );
}

#[test]
fn overlapping_registers_name_both_tags() {
    let src = with_tags(
        "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 100\ntype = \"f32\"\n\
         [[modbus.tag]]\nname = \"b\"\ntable = \"input\"\naddress = 101\ntype = \"u16\"\n\
         [[modbus.tag]]\nname = \"c\"\ntable = \"holding\"\naddress = 101\ntype = \"u16\"\n",
    );
    one(
        &src,
        21,
        11,
        "modbus[0].tag[2].address",
        &[
            "tag \"c\" (holding address 101) overlaps tag \"a\" (holding addresses 100-101, \
             modbus[0].tag[0] at line 11)",
            "must not share registers",
        ],
    );
}

#[test]
fn overlap_reported_at_the_later_tag_even_if_its_address_is_lower() {
    let src = with_tags(
        "[[modbus.tag]]\nname = \"a\"\ntable = \"coil\"\naddress = 7\ntype = \"bool\"\n\
         [[modbus.tag]]\nname = \"b\"\ntable = \"holding\"\naddress = 7\ntype = \"u16\"\n\
         [[modbus.tag]]\nname = \"c\"\ntable = \"holding\"\naddress = 4\ntype = \"u64\"\n",
    );
    one(
        &src,
        21,
        11,
        "modbus[0].tag[2].address",
        &[
            "tag \"c\" (holding addresses 4-7) overlaps tag \"b\" (holding address 7, modbus[0].tag[1] at line 16)",
        ],
    );
}

#[test]
fn bool_on_register_table_and_number_on_bit_table() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"bool\"\n",
        ),
        12,
        8,
        "modbus[0].tag[0].type",
        &[
            "type \"bool\" needs a bit table",
            "table = \"coil\" or \"discrete\"",
        ],
    );
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"discrete\"\naddress = 1\ntype = \"i32\"\n",
        ),
        12,
        8,
        "modbus[0].tag[0].type",
        &[
            "\"i32\" needs registers, but table \"discrete\" holds single bits",
            "use type = \"bool\"",
        ],
    );
}

#[test]
fn enum_values_list_the_choices() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding_register\"\naddress = 1\ntype = \"f32\"\n",
        ),
        10,
        9,
        "modbus[0].tag[0].table",
        &[
            "unknown value \"holding_register\" (did you mean \"holding\"?)",
            "valid values are \"coil\", \"discrete\", \"holding\", \"input\"",
        ],
    );
    let d = diags(&with_tags(
        "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"F32\"\nbyte_order = \"middle\"\n",
    ));
    assert_eq!(d.len(), 2, "{}", show(&d));
    check(
        &d[0],
        12,
        8,
        "modbus[0].tag[0].type",
        &[
            "unknown value \"F32\" (did you mean \"f32\"?)",
            "\"bool\", \"u16\", \"i16\", \"u32\", \"i32\", \"u64\", \"i64\", \"f32\", \"f64\", \"string\"",
        ],
    );
    check(
        &d[1],
        13,
        14,
        "modbus[0].tag[0].byte_order",
        &["valid values are \"big\", \"little\""],
    );
}

#[test]
fn type_names_from_other_tools_get_a_suggestion() {
    for (theirs, ours) in [
        ("REAL", "f32"),
        ("double", "f64"),
        ("word", "u16"),
        ("DINT", "i32"),
    ] {
        one(
            &with_tags(&format!(
                "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"{theirs}\"\n"
            )),
            12,
            8,
            "modbus[0].tag[0].type",
            &[&format!(
                "unknown value \"{theirs}\" (did you mean \"{ours}\"?)"
            )],
        );
    }
}

#[test]
fn string_needs_length_and_only_string_has_one() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"string\"\n",
        ),
        12,
        8,
        "modbus[0].tag[0].length",
        &["a string tag needs `length`", "length = 8 (1 to 125)"],
    );
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"u32\"\nlength = 2\n",
        ),
        13,
        10,
        "modbus[0].tag[0].length",
        &["`length` applies only to string tags", "remove `length`"],
    );
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"string\"\nlength = 126\n",
        ),
        13,
        10,
        "modbus[0].tag[0].length",
        &["from 1 to 125 (registers)"],
    );
}

#[test]
fn address_past_the_end() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 65534\ntype = \"f64\"\n",
        ),
        11,
        11,
        "modbus[0].tag[0].address",
        &["occupies 65534-65537", "the address can be at most 65532"],
    );
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = -1\ntype = \"u16\"\n",
        ),
        11,
        11,
        "modbus[0].tag[0].address",
        &["-1 is out of range", "from 0 to 65535"],
    );
}

#[test]
fn scaling_fields() {
    let d = diags(&with_tags(
        "[[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 1\ntype = \"i16\"\n\
         scale = 0\noffset = inf\ndeadband = -0.5\n",
    ));
    assert_eq!(d.len(), 3, "{}", show(&d));
    check(
        &d[0],
        13,
        9,
        "modbus[0].tag[0].scale",
        &["finite number other than 0"],
    );
    check(
        &d[1],
        14,
        10,
        "modbus[0].tag[0].offset",
        &["offset inf is not usable", "finite number"],
    );
    check(
        &d[2],
        15,
        12,
        "modbus[0].tag[0].deadband",
        &["finite number >= 0"],
    );
}

#[test]
fn deadband_and_scale_not_on_bool_or_string() {
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"coil\"\naddress = 1\ntype = \"bool\"\ndeadband = 1\n",
        ),
        13,
        12,
        "modbus[0].tag[0].deadband",
        &["`deadband` does not apply to \"bool\" tags"],
    );
    one(
        &with_tags(
            "[[modbus.tag]]\nname = \"a\"\ntable = \"input\"\naddress = 1\ntype = \"string\"\nlength = 4\nscale = 2\n",
        ),
        14,
        9,
        "modbus[0].tag[0].scale",
        &["`scale` does not apply to \"string\" tags"],
    );
}

#[test]
fn tag_names_are_paths() {
    for (name, why) in [
        ("", "is empty"),
        ("/a", "empty path segment"),
        ("a//b", "empty path segment"),
        ("a/b/", "empty path segment"),
        ("a b", "contains ' '"),
        ("a/../b", "only of dots"),
    ] {
        one(
            &with_tags(&format!(
                "[[modbus.tag]]\nname = \"{name}\"\ntable = \"holding\"\naddress = 1\ntype = \"u16\"\n"
            )),
            9,
            8,
            "modbus[0].tag[0].name",
            &[why, "separated by '/', like \"site/area/pump3/speed\""],
        );
    }
}

#[test]
fn missing_tag_fields_point_at_the_header() {
    let d = diags(&with_tags("\n[[modbus.tag]]\nname = \"a\"\n"));
    assert_eq!(d.len(), 3, "{}", show(&d));
    check(
        &d[0],
        9,
        1,
        "modbus[0].tag[0].table",
        &["missing required key `table` in [[modbus.tag]]"],
    );
    check(
        &d[1],
        9,
        1,
        "modbus[0].tag[0].type",
        &["missing required key `type`"],
    );
    check(
        &d[2],
        9,
        1,
        "modbus[0].tag[0].address",
        &["missing required key `address`"],
    );
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let src = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\nmtu = 1\n\n\
         [[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\n\
         [[modbus.tag]]\nname = \"a\"\ntable = \"coil\"\naddress = 1\ntype = \"u16\"\n\
         [[modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 70000\ntype = \"u16\"\n";
    let d = diags(src);
    let places: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert_eq!(
        places,
        [
            (4, "link.mtu"),
            (13, "modbus[0].tag[0].type"),
            (15, "modbus[0].tag[1].name"),
            (17, "modbus[0].tag[1].address"),
        ]
    );
}

#[test]
fn load_reports_unreadable_file_and_bad_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let err = TxConfig::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .contains("nope.toml: cannot read the config file"),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        b"[link]\ninsecure_no_key = true\ndestination = \"12\xff\"\n",
    )
    .expect("write");
    let err = TxConfig::load(&bad).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (3, 18));
    assert!(d.message.contains("not valid UTF-8"), "{err}");
}
