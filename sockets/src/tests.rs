use super::*;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpStream};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn refused(address: SocketAddr) -> bool {
    matches!(
        TcpStream::connect(address),
        Err(error) if error.kind() == ErrorKind::ConnectionRefused
    )
}

/// Whether connecting is refused within 5 s. A socket closed here may live
/// on for a moment in a child that another test of this binary forks (a
/// fork copies every descriptor, close-on-exec ones included, until the
/// child execs), so "closed" is awaited, not assumed at once.
fn refused_soon(address: SocketAddr) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if refused(address) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_held_tcp_port_serves_each_incarnation_and_nobody_else() {
    let held = HeldAddress::new("a.node", LOOPBACK, Protocol::Tcp).expect("hold a port");
    let address = held.address();
    assert_ne!(address.port(), 0);
    // Nobody else can bind it, and with no incarnation running, connecting is
    // refused (the placeholder never listens).
    assert!(std::net::TcpListener::bind(address).is_err());
    let spec = SocketSpec {
        name: "other".to_owned(),
        address,
        protocol: Protocol::Tcp,
    };
    assert!(matches!(
        bind(&spec, Sharing::Exclusive),
        Err(SocketError::Bind { .. })
    ));
    assert!(refused(address));

    for incarnation in 0..2u8 {
        let listener = held
            .socket_for_child()
            .expect("a socket for the child")
            .into_tcp_listener()
            .expect("TCP");
        assert_eq!(listener.local_addr().expect("address"), address);
        listener.set_nonblocking(false).expect("blocking");
        let mut client = TcpStream::connect(address).expect("connect");
        client.write_all(&[incarnation]).expect("write");
        let (mut served, _) = listener.accept().expect("accept");
        let mut byte = [0u8];
        served.read_exact(&mut byte).expect("read");
        assert_eq!(byte, [incarnation]);
        drop((client, served, listener));
        assert!(
            refused_soon(address),
            "refused again once the incarnation is gone"
        );
    }
}

#[test]
fn a_held_udp_port_reaches_each_incarnation() {
    let held = HeldAddress::new("a.replicator", LOOPBACK, Protocol::Udp).expect("hold a port");
    let address = held.address();
    assert!(std::net::UdpSocket::bind(address).is_err());
    let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
    for incarnation in 0..2u8 {
        let socket = held
            .socket_for_child()
            .expect("a socket for the child")
            .into_udp_socket()
            .expect("UDP");
        socket.set_nonblocking(false).expect("blocking");
        sender.send_to(&[incarnation], address).expect("send");
        let mut byte = [0u8; 1];
        let (length, _) = socket.recv_from(&mut byte).expect("receive");
        assert_eq!(&byte[..length], &[incarnation]);
    }
}

#[test]
fn converting_to_the_wrong_protocol_names_the_socket() {
    let held = HeldAddress::new("b.router", LOOPBACK, Protocol::Tcp).expect("hold a port");
    let error = held
        .socket_for_child()
        .expect("socket")
        .into_udp_socket()
        .expect_err("a TCP socket is not UDP");
    let message = error.to_string();
    assert!(
        message.contains("b.router") && message.contains("UDP"),
        "{message}"
    );
}

#[test]
fn an_exclusive_bind_of_a_taken_address_names_socket_and_address() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let address = taken.local_addr().expect("address");
    let spec = SocketSpec {
        name: "eu-west.router".to_owned(),
        address,
        protocol: Protocol::Tcp,
    };
    let message = bind(&spec, Sharing::Exclusive)
        .expect_err("in use")
        .to_string();
    assert!(
        message.contains("eu-west.router") && message.contains(&address.to_string()),
        "{message}"
    );
}

#[test]
fn a_child_gets_the_sockets_as_descriptors_3_and_up_with_names() {
    let node = HeldAddress::new("a.node", LOOPBACK, Protocol::Tcp).expect("hold");
    let replicator = HeldAddress::new("a.replicator", LOOPBACK, Protocol::Udp).expect("hold");
    let mut handover = Handover::new();
    handover.push(node.socket_for_child().expect("socket"));
    handover.push(replicator.socket_for_child().expect("socket"));
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(
        r#"echo "$LISTEN_FDS $LISTEN_FDNAMES ${LISTEN_PID:-none}"; readlink /proc/$$/fd/3 /proc/$$/fd/4"#,
    );
    command.env("LISTEN_PID", "1");
    handover.apply(&mut command).expect("hand over");
    let output = command.output().expect("run sh");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "2 a.node:a.replicator none", "{stdout}");
    assert!(
        lines[1].starts_with("socket:") && lines[2].starts_with("socket:"),
        "{stdout}"
    );
}

#[test]
fn each_role_listens_on_its_topology_addresses() {
    let topology = meridian_topology::Topology::demo(std::path::Path::new("/tmp/demo"));
    let (name, region) = topology.regions.iter().next().expect("a region");
    let names = |role| -> Vec<String> {
        role_sockets(name, region, role)
            .into_iter()
            .map(|spec| spec.name)
            .collect()
    };
    assert_eq!(
        names(Role::Node),
        [
            format!("{name}.node"),
            format!("{name}.admin"),
            format!("{name}.http"),
            format!("{name}.stomp")
        ]
    );
    // Without http and stomp addresses a node listens on two sockets.
    let mut bare = region.clone();
    (bare.http, bare.stomp) = (None, None);
    assert_eq!(role_sockets(name, &bare, Role::Node).len(), 2);
    assert_eq!(names(Role::Replicator), [format!("{name}.replicator")]);
    assert_eq!(names(Role::Router), [format!("{name}.router")]);
    let replicator = &role_sockets(name, region, Role::Replicator)[0];
    assert_eq!(
        (Some(replicator.address), replicator.protocol),
        (region.replicator, Protocol::Udp)
    );
    // A private site's replicator listens on nothing.
    let topology = meridian_topology::Topology::demo(std::path::Path::new("/d"));
    let on_prem = topology.region("on-prem").expect("on-prem");
    assert!(role_sockets("on-prem", on_prem, Role::Replicator).is_empty());
}

#[test]
fn a_reissued_socket_serves_the_next_incarnation_on_the_same_address() {
    // Bound here (exclusive) and held by a placeholder (shared): both reissue.
    let exclusive = bind(
        &SocketSpec {
            name: "a.router".to_owned(),
            address: SocketAddr::new(LOOPBACK, 0),
            protocol: Protocol::Tcp,
        },
        Sharing::Exclusive,
    )
    .expect("bind");
    let held = HeldAddress::new("a.node", LOOPBACK, Protocol::Tcp).expect("hold");
    let udp = HeldAddress::new("a.replicator", LOOPBACK, Protocol::Udp).expect("hold");
    for first in [
        exclusive,
        held.socket_for_child().expect("socket"),
        udp.socket_for_child().expect("socket"),
    ] {
        let address = first.address();
        let reissue = first.reissue().expect("reissue");
        drop(first); // the first incarnation died
        let next = reissue.socket().expect("a socket for the next incarnation");
        assert_eq!(next.address(), address);
    }
}
