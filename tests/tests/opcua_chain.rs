//! The whole OPC UA chain: a simulated plant server (tests::opcua_sim) → gateway-tx (OPC UA
//! source) → the link → gateway-rx (OPC UA mirror) → async-opcua's client. What a client reads
//! and subscribes to on the mirror is compared with what the same client reads from the plant:
//! value and Variant type, DataType, source timestamp and StatusCode. The plant restarts (tags
//! go Bad on the mirror, then recover by themselves); writes to the mirror are refused; the
//! plant never sees a request that would change it; and the same chain with Basic256Sha256
//! SignAndEncrypt, and with Aes128_Sha256_RsaOaep (Sign towards the plant, SignAndEncrypt on
//! the mirror), and user names on both legs, each side trusting the other's certificate the
//! way an engineer does (moving it from rejected/ to trusted/).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_rx::Receiver;
use gateway_tx::Transmitter;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn, Variant, WriteValue,
};
use protocol::model::{Quality, UnixNanos, Value, ValueType};
use tests::opcua_sim::{
    ALL_TYPES, OpcUaSim, Reader, SimConfig, SimSecurity, USER_TOKEN_ID, sample_value, type_var,
};

const PLANT_NS: &str = "urn:plant:chain";
const MIRROR_NS: &str = "urn:gateway:mirror:chain";
const CONVERGE: Duration = Duration::from_secs(30);
/// Source times on whole 100 ns ticks, which OPC UA's DateTime holds exactly.
const T0: UnixNanos = 1_750_000_000_000_000_000;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
}

fn q(p: &Path) -> String {
    let s = p.display().to_string();
    assert!(!s.contains(['"', '\\']), "needs escaping: {s}");
    format!("\"{s}\"")
}

fn tag_name(t: ValueType) -> String {
    format!("plant/types/{}", type_var(t))
}

/// A password file as the config wants it: owner-only.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, password).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

struct Secure {
    /// The plant's user, with its password file.
    plant_user: (String, PathBuf),
    /// The mirror's user, with its password.
    mirror_user: (String, String),
    /// gateway-tx's `security_policy` and `security_mode` towards the plant, as configured.
    plant_security: (&'static str, &'static str),
    /// The mirror's one `[[opcua_server.endpoint]]`: policy and mode, as configured.
    mirror_security: (&'static str, &'static str),
}

async fn start_rx(dir: &Path, link_port: u16, secure: Option<&Secure>) -> Receiver {
    let mut text = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:{link_port}\"\nheartbeat_timeout_ms = 1000\n\n\
         [opcua_server]\nbind = \"127.0.0.1:0\"\nnamespace_uri = \"{MIRROR_NS}\"\npki_dir = {}\n",
        q(&dir.join("mirror-pki"))
    );
    if let Some(s) = secure {
        let pw = password_file(dir, "mirror-user.password", &s.mirror_user.1);
        text.push_str(&format!(
            "anonymous = false\n\n[[opcua_server.endpoint]]\nsecurity_policy = \"{}\"\n\
             security_mode = \"{}\"\n\n[[opcua_server.user]]\nname = \"{}\"\n\
             password_file = {}\n",
            s.mirror_security.0,
            s.mirror_security.1,
            s.mirror_user.0,
            q(&pw)
        ));
    }
    text.push_str(&format!(
        "\n[status]\nlog_interval_s = 3600\n\n[store]\npath = {}\ngap_log = {}\n",
        q(&dir.join("history.sqlite")),
        q(&dir.join("gaps.jsonl"))
    ));
    let config = config::rx::RxConfig::parse(&text, &dir.join("gateway-rx.toml"))
        .unwrap_or_else(|e| panic!("RX config refused: {e}\n{text}"));
    Receiver::start(config).await.expect("receiver starts")
}

async fn start_tx(
    dir: &Path,
    link_port: u16,
    sim: &OpcUaSim,
    secure: Option<&Secure>,
) -> Transmitter {
    let mut text = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{link_port}\"\nheartbeat_ms = 200\nsnapshot_period_s = 2\n\n\
         [[opcua]]\nname = \"plant\"\nurl = \"{}\"\npki_dir = {}\ntimeout_ms = 2000\n\
         publishing_interval_ms = 50\n",
        sim.url(),
        q(&dir.join("tx-pki"))
    );
    if let Some(s) = secure {
        text.push_str(&format!(
            "security_policy = \"{}\"\nsecurity_mode = \"{}\"\n\
             user = \"{}\"\npassword_file = {}\n",
            s.plant_security.0,
            s.plant_security.1,
            s.plant_user.0,
            q(&s.plant_user.1)
        ));
    }
    for t in ALL_TYPES {
        text.push_str(&format!(
            "\n[[opcua.tag]]\nname = \"{}\"\nnode = \"{}\"\ntype = \"{}\"\nsampling_interval_ms = 20\n",
            tag_name(t),
            sim.node_text(&type_var(t)).expect("node of the type's variable"),
            config::opcua::type_name(t),
        ));
    }
    let config = config::tx::TxConfig::parse(&text, &dir.join("gateway-tx.toml"))
        .unwrap_or_else(|e| panic!("TX config refused: {e}\n{text}"));
    Transmitter::start(config)
        .await
        .expect("transmitter starts")
}

async fn connect(
    url: &str,
    pki: &Path,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    identity: IdentityToken,
) -> Result<Arc<Session>, StatusCode> {
    let mut client = ClientBuilder::new()
        .application_name("gateway chain test client")
        .application_uri("urn:gateway:chain:test-client")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .expect("client config");
    let (session, event_loop) = client
        .connect_to_matching_endpoint((url, policy.to_str(), mode), identity)
        .await
        .map_err(|e| e.status())?;
    let event_loop = event_loop.spawn();
    tokio::select! {
        connected = session.wait_for_connection() => {
            if connected { Ok(session) } else { Err(StatusCode::BadNotConnected) }
        }
        ended = event_loop => Err(ended.unwrap_or(StatusCode::BadInternalError)),
        _ = tokio::time::sleep(Duration::from_secs(10)) => Err(StatusCode::BadTimeout),
    }
}

async fn anonymous(url: &str, pki: &Path) -> Arc<Session> {
    connect(
        url,
        pki,
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .unwrap_or_else(|e| panic!("anonymous session on {url}: {e}"))
}

async fn read_all(session: &Session, nodes: &[NodeId], attribute: AttributeId) -> Vec<DataValue> {
    let ids: Vec<ReadValueId> = nodes
        .iter()
        .map(|n| ReadValueId {
            node_id: n.clone(),
            attribute_id: attribute as u32,
            ..Default::default()
        })
        .collect();
    session
        .read(&ids, TimestampsToReturn::Both, 0.0)
        .await
        .expect("read")
}

/// The plant's and the mirror's node of every typed tag.
struct Nodes {
    plant: Vec<NodeId>,
    mirror: Vec<NodeId>,
}

async fn nodes(plant: &Session, mirror: &Session) -> Nodes {
    let pns = plant.get_namespace_index(PLANT_NS).await.expect("plant ns");
    let mns = mirror
        .get_namespace_index(MIRROR_NS)
        .await
        .expect("mirror ns");
    Nodes {
        plant: ALL_TYPES
            .iter()
            .map(|t| NodeId::new(pns, type_var(*t)))
            .collect(),
        mirror: ALL_TYPES
            .iter()
            .map(|t| NodeId::new(mns, tag_name(*t)))
            .collect(),
    }
}

/// Differences between what the plant and the mirror serve for every typed tag: value (with its
/// Variant type), StatusCode, source timestamp; empty when equal.
async fn differences(plant: &Session, mirror: &Session, n: &Nodes) -> Vec<String> {
    let a = read_all(plant, &n.plant, AttributeId::Value).await;
    let b = read_all(mirror, &n.mirror, AttributeId::Value).await;
    let mut out = Vec::new();
    for ((t, p), m) in ALL_TYPES.iter().zip(&a).zip(&b) {
        if (&p.value, p.status, p.source_timestamp) != (&m.value, m.status, m.source_timestamp) {
            out.push(format!(
                "{t:?}: plant {:?} {:?} {:?}, mirror {:?} {:?} {:?}",
                p.value, p.status, p.source_timestamp, m.value, m.status, m.source_timestamp
            ));
        }
    }
    out
}

async fn wait_equal(plant: &Session, mirror: &Session, n: &Nodes, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let diff = differences(plant, mirror, n).await;
        if diff.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: mirror still differs from the plant after {CONVERGE:?}:\n{}",
            diff.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every typed variable of the plant gets a known value and source time; the Double one is
/// Uncertain at the plant, which the mirror must show unchanged.
fn set_plant_values(sim: &OpcUaSim) {
    for (i, t) in ALL_TYPES.iter().enumerate() {
        let quality = if *t == ValueType::Double {
            Quality::UNCERTAIN_LAST_USABLE_VALUE
        } else {
            Quality::GOOD
        };
        sim.set(
            &type_var(*t),
            sample_value(*t),
            quality,
            T0 + 1_000 * i as i64,
        )
        .expect("set a plant value");
    }
}

/// Moves the one certificate in `pki/rejected` to `pki/trusted`, as an engineer does after
/// checking it; waits for it to appear first.
/// The secured chains' users: "plant-reader" on the plant (password in a file, as gateway-tx
/// reads it) and "historian" on the mirror; each leg's policy and mode as the configs spell them.
fn users_and_security(
    dir: &Path,
    plant_security: (&'static str, &'static str),
    mirror_security: (&'static str, &'static str),
) -> Secure {
    Secure {
        plant_user: (
            "plant-reader".into(),
            password_file(dir, "plant-reader.password", "plant-pw-1"),
        ),
        mirror_user: ("historian".into(), "mirror-pw-2".into()),
        plant_security,
        mirror_security,
    }
}

/// The simulated plant with the user "plant-reader"; `secure` adds its Basic256Sha256
/// SignAndEncrypt endpoint.
fn plant_with_user(dir: &Path, secure: bool) -> SimConfig {
    SimConfig {
        namespace_uri: PLANT_NS.into(),
        secure,
        pki_dir: dir.join("plant-pki"),
        load_variables: 0,
        user: Some(("plant-reader".into(), "plant-pw-1".into())),
    }
}

/// The mirror's trust list and user check, as an IT client meets them on a secured endpoint:
/// its unknown certificate is refused until an engineer moves it from rejected/ to trusted/;
/// then the right password is accepted and a wrong one refused. Returns the session.
async fn historian_on_secured_mirror(
    mirror_url: &str,
    client_pki: &Path,
    mirror_pki: &Path,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
) -> Arc<Session> {
    let secured = |identity| connect(mirror_url, client_pki, policy, mode, identity);
    let user = || IdentityToken::UserName("historian".into(), "mirror-pw-2".into());
    assert!(secured(user()).await.is_err(), "untrusted client refused");
    trust_rejected(mirror_pki, "gateway-rx").await;
    let mirror = secured(user())
        .await
        .unwrap_or_else(|e| panic!("trusted client, right password, {policy:?} {mode:?}: {e}"));
    let wrong = secured(IdentityToken::UserName("historian".into(), "nope".into())).await;
    assert!(wrong.is_err(), "a wrong password is refused");
    mirror
}

async fn trust_rejected(pki: &Path, what: &str) {
    let rejected = pki.join("rejected");
    let start = Instant::now();
    let file = loop {
        let found = std::fs::read_dir(&rejected)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if let [one] = found.as_slice() {
            break one.clone();
        }
        assert!(
            found.len() <= 1 && start.elapsed() < CONVERGE,
            "{what}: expected one certificate in {}, found {found:?}",
            rejected.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trusted = pki.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::rename(&file, trusted.join(file.file_name().expect("file name"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plant_to_mirror_values_subscription_restart_and_refusals() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = OpcUaSim::start_new(
        SimConfig {
            namespace_uri: PLANT_NS.into(),
            secure: false,
            pki_dir: dir.path().join("plant-pki"),
            load_variables: 0,
            user: None,
        },
        0,
    )
    .await
    .expect("simulated plant");
    set_plant_values(&sim);
    let link_port = tests::free_udp_port().unwrap();
    let rx = start_rx(dir.path(), link_port, None).await;
    let tx = start_tx(dir.path(), link_port, &sim, None).await;
    let mirror_url = rx.opcua_endpoint.clone().expect("mirror endpoint");
    let client_pki = dir.path().join("client-pki");
    let plant = anonymous(&sim.url(), &client_pki).await;
    let mirror = anonymous(&mirror_url, &client_pki).await;
    let n = nodes(&plant, &mirror).await;

    // 1. Every type: value, Variant type, StatusCode (one Uncertain), source timestamp.
    let took = wait_equal(&plant, &mirror, &n, "first values").await;
    eprintln!("values on the mirror equal the plant's after {took:?}");
    let mirrored = read_all(&mirror, &n.mirror, AttributeId::Value).await;
    let double = ALL_TYPES
        .iter()
        .position(|t| *t == ValueType::Double)
        .unwrap();
    assert_eq!(
        mirrored[double].status,
        Some(StatusCode::from(Quality::UNCERTAIN_LAST_USABLE_VALUE.0)),
        "the plant's Uncertain arrives unchanged"
    );
    assert!(
        mirrored.iter().all(|v| v.value.is_some()),
        "every tag has a value: {mirrored:?}"
    );
    // DataType attributes equal too.
    let a = read_all(&plant, &n.plant, AttributeId::DataType).await;
    let b = read_all(&mirror, &n.mirror, AttributeId::DataType).await;
    for ((t, p), m) in ALL_TYPES.iter().zip(&a).zip(&b) {
        assert!(p.value.is_some(), "{t:?}: the plant has a DataType");
        assert_eq!(p.value, m.value, "{t:?}: DataType");
    }

    // 2. A change at the plant reaches a subscriber of the mirror with its source time.
    let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let sub = mirror
        .create_subscription(
            Duration::from_millis(20),
            100,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |v, _| {
                let _ = changes_tx.send(v);
            }),
        )
        .await
        .expect("subscription");
    let int32 = ALL_TYPES
        .iter()
        .position(|t| *t == ValueType::Int32)
        .unwrap();
    let created = mirror
        .create_monitored_items(
            sub,
            TimestampsToReturn::Both,
            vec![MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId {
                    node_id: n.mirror[int32].clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    sampling_interval: 0.0,
                    queue_size: 10,
                    discard_oldest: true,
                    ..Default::default()
                },
            }],
        )
        .await
        .expect("monitored item");
    assert_eq!(created[0].result.status_code, StatusCode::Good);
    let first = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("initial value")
        .expect("open");
    assert_eq!(first.value, Some(Variant::Int32(-123_456)));
    let t1 = T0 + 7_000_000_000;
    sim.set("Int32", Value::Int32(424_242), Quality::GOOD, t1)
        .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let v = changes.recv().await.expect("open");
            if v.value == Some(Variant::Int32(424_242)) {
                return v;
            }
        }
    })
    .await
    .expect("the change reaches the mirror's subscriber");
    assert_eq!(
        changed.source_timestamp,
        Some(gateway_tx::opcua::convert::to_datetime(t1))
    );
    assert_eq!(changed.status, Some(StatusCode::Good));

    // 3. Writes to the mirror are refused and change nothing.
    let before = read_all(&mirror, &n.mirror, AttributeId::Value).await;
    let results = mirror
        .write(&[WriteValue {
            node_id: n.mirror[int32].clone(),
            attribute_id: AttributeId::Value as u32,
            value: DataValue::new_now(Variant::Int32(1)),
            ..Default::default()
        }])
        .await
        .expect("write call answered");
    assert!(
        matches!(
            results[0],
            StatusCode::BadNotWritable | StatusCode::BadUserAccessDenied
        ),
        "write answered {:?}",
        results[0]
    );
    let after = read_all(&mirror, &n.mirror, AttributeId::Value).await;
    assert_eq!(before[int32].value, after[int32].value, "value unchanged");

    // 4. The plant restarts: the mirror's tags go Bad, then recover by themselves.
    sim.stop().await;
    let start = Instant::now();
    let bad = loop {
        let v = read_all(&mirror, &n.mirror, AttributeId::Value).await;
        if v.iter().all(|d| d.status.is_some_and(|s| s.is_bad())) {
            break v;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "tags did not go Bad on the mirror: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "plant down: the mirror shows {:?} after {:?}",
        bad[0].status,
        start.elapsed()
    );
    assert!(
        bad.iter().all(|d| d.status == bad[0].status),
        "every tag shows the same cause: {bad:?}"
    );
    sim.start().await.expect("plant restarts");
    let plant = anonymous(&sim.url(), &client_pki).await;
    let took = wait_equal(&plant, &mirror, &n, "after the plant restarted").await;
    eprintln!("plant back: mirror equal again after {took:?}");

    // 5. Not one request that would change the plant.
    assert_eq!(
        sim.mutations().total(),
        0,
        "the plant saw a changing request: {:?}",
        sim.mutations()
    );
    assert_ne!(tx.session, 0);
    let _ = mirror.disconnect().await;
    let _ = plant.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_on_both_legs_with_user_names_and_trust_lists() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let secure = users_and_security(
        dir.path(),
        ("basic256sha256", "sign_and_encrypt"),
        ("basic256sha256", "sign_and_encrypt"),
    );
    let sim = OpcUaSim::start_new(plant_with_user(dir.path(), true), 0)
        .await
        .expect("simulated plant");
    set_plant_values(&sim);
    let link_port = tests::free_udp_port().unwrap();
    let rx = start_rx(dir.path(), link_port, Some(&secure)).await;
    let tx = start_tx(dir.path(), link_port, &sim, Some(&secure)).await;
    // gateway-tx refuses the plant's unknown certificate and files it under rejected/.
    trust_rejected(&dir.path().join("tx-pki"), "gateway-tx").await;

    let mirror_url = rx.opcua_endpoint.clone().expect("mirror endpoint");
    let client_pki = dir.path().join("client-pki");
    let mirror = historian_on_secured_mirror(
        &mirror_url,
        &client_pki,
        &dir.path().join("mirror-pki"),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
    )
    .await;

    let plant = anonymous(&sim.url(), &client_pki).await;
    let n = nodes(&plant, &mirror).await;
    let took = wait_equal(&plant, &mirror, &n, "secured chain").await;
    eprintln!("secured chain: mirror equals the plant after {took:?}");
    assert_eq!(sim.mutations().total(), 0);
    assert_ne!(tx.session, 0);
    let _ = mirror.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_sha256_rsaoaep_on_both_legs_with_user_names() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let secure = users_and_security(
        dir.path(),
        ("aes128_sha256_rsaoaep", "sign"),
        ("aes128_sha256_rsaoaep", "sign_and_encrypt"),
    );
    // The plant offers Aes128_Sha256_RsaOaep Sign as its only secured endpoint.
    let sim = OpcUaSim::start_with(
        plant_with_user(dir.path(), false),
        SimSecurity {
            endpoints: vec![(
                SecurityPolicy::Aes128Sha256RsaOaep,
                MessageSecurityMode::Sign,
            )],
            user_certificates: Vec::new(),
        },
        0,
    )
    .await
    .expect("simulated plant");
    set_plant_values(&sim);
    let link_port = tests::free_udp_port().unwrap();
    let rx = start_rx(dir.path(), link_port, Some(&secure)).await;
    let tx = start_tx(dir.path(), link_port, &sim, Some(&secure)).await;
    trust_rejected(&dir.path().join("tx-pki"), "gateway-tx").await;

    let mirror_url = rx.opcua_endpoint.clone().expect("mirror endpoint");
    let client_pki = dir.path().join("client-pki");
    // The mirror offers exactly what its config lists: no None endpoint (anonymous is off and
    // passwords never go over None), no Basic256Sha256 default.
    let discovery = ClientBuilder::new()
        .application_name("gateway chain test discovery")
        .application_uri("urn:gateway:chain:test-discovery")
        .pki_dir(dir.path().join("discovery-pki"))
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .client()
        .expect("client config");
    let offered: Vec<(String, MessageSecurityMode)> = discovery
        .get_server_endpoints_from_url(mirror_url.as_str())
        .await
        .expect("GetEndpoints on the mirror")
        .iter()
        .map(|e| (e.security_policy_uri.to_string(), e.security_mode))
        .collect();
    assert_eq!(
        offered,
        vec![(
            SecurityPolicy::Aes128Sha256RsaOaep.to_uri().to_owned(),
            MessageSecurityMode::SignAndEncrypt
        )]
    );
    let mirror = historian_on_secured_mirror(
        &mirror_url,
        &client_pki,
        &dir.path().join("mirror-pki"),
        SecurityPolicy::Aes128Sha256RsaOaep,
        MessageSecurityMode::SignAndEncrypt,
    )
    .await;

    let plant = anonymous(&sim.url(), &client_pki).await;
    let n = nodes(&plant, &mirror).await;
    let took = wait_equal(&plant, &mirror, &n, "Aes128_Sha256_RsaOaep chain").await;
    eprintln!("Aes128_Sha256_RsaOaep chain: mirror equals the plant after {took:?}");
    // gateway-tx read the plant as its user over Aes128_Sha256_RsaOaep Sign (the only other
    // reader is this test's anonymous client on None).
    let gateway = Reader {
        security_policy_uri: SecurityPolicy::Aes128Sha256RsaOaep.to_uri().to_owned(),
        security_mode: MessageSecurityMode::Sign,
        user_token: USER_TOKEN_ID.to_owned(),
    };
    let readers = sim.readers();
    assert!(readers.contains(&gateway), "{readers:?}");
    assert!(
        readers
            .iter()
            .all(|r| *r == gateway || r.security_mode == MessageSecurityMode::None),
        "{readers:?}"
    );
    assert_eq!(sim.mutations().total(), 0);
    assert_ne!(tx.session, 0);
    let _ = mirror.disconnect().await;
}
