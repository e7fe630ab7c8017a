//! Sockets passed to this process by its parent (systemd's `sd_listen_fds`
//! protocol, see the crate docs).

use crate::{BoundSocket, Protocol, SocketError, SocketSpec};
use socket2::Socket;

/// The first inherited descriptor (`SD_LISTEN_FDS_START` in `sd-daemon.h`).
pub(crate) const FIRST_FD: i32 = 3;

/// The sockets this process inherited, by name; each can be taken once.
pub struct Inherited {
    fds: listenfd::ListenFd,
    /// Index `i` names descriptor `FIRST_FD + i`; `None` once taken.
    names: Vec<Option<String>>,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Inherited")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Inherited {
    /// Reads `LISTEN_FDS` and `LISTEN_FDNAMES` (and removes `LISTEN_FDS` and
    /// `LISTEN_PID` from the environment, so children do not see them). Call
    /// it once, early in `main`, before any thread starts. With no
    /// `LISTEN_FDS` there is nothing inherited.
    pub fn from_env() -> Result<Inherited, SocketError> {
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let fds = listenfd::ListenFd::from_env();
        let names = parse_names(names.as_deref(), fds.len())?;
        Ok(Inherited { fds, names })
    }

    /// Takes the socket named `spec.name`, if inherited; it must have the
    /// spec's protocol and be bound to the spec's address.
    pub fn take(&mut self, spec: &SocketSpec) -> Result<Option<BoundSocket>, SocketError> {
        let Some(index) = self
            .names
            .iter()
            .position(|name| name.as_deref() == Some(spec.name.as_str()))
        else {
            return Ok(None);
        };
        self.names[index] = None;
        let socket = self.take_index(index, &spec.name, spec.protocol)?;
        if socket.address != spec.address {
            return Err(SocketError::Mismatch {
                name: spec.name.clone(),
                actual: socket.address,
                actual_protocol: socket.protocol,
                expected: spec.address,
                expected_protocol: spec.protocol,
            });
        }
        Ok(Some(socket))
    }

    /// Names of the sockets not taken yet.
    pub fn remaining(&self) -> Vec<String> {
        self.names.iter().flatten().cloned().collect()
    }

    fn take_index(
        &mut self,
        index: usize,
        name: &str,
        protocol: Protocol,
    ) -> Result<BoundSocket, SocketError> {
        let fd = i64::from(FIRST_FD) + i64::try_from(index).unwrap_or(i64::MAX);
        let wrong = |detail: String| {
            SocketError::Inherit(format!(
                "descriptor {fd} ({name}) is not a {protocol} socket: {detail}"
            ))
        };
        let socket: Socket = match protocol {
            Protocol::Tcp => self
                .fds
                .take_tcp_listener(index)
                .map_err(|error| wrong(error.to_string()))?
                .ok_or_else(|| wrong("already taken".to_owned()))?
                .into(),
            Protocol::Udp => self
                .fds
                .take_udp_socket(index)
                .map_err(|error| wrong(error.to_string()))?
                .ok_or_else(|| wrong("already taken".to_owned()))?
                .into(),
        };
        let address = crate::local_address(&socket).map_err(|error| wrong(error.to_string()))?;
        Ok(BoundSocket {
            name: name.to_owned(),
            address,
            protocol,
            socket,
        })
    }
}

/// Splits `LISTEN_FDNAMES` and checks it names `count` descriptors.
fn parse_names(names: Option<&str>, count: usize) -> Result<Vec<Option<String>>, SocketError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let names = names.ok_or_else(|| {
        SocketError::Inherit(format!(
            "LISTEN_FDS passes {count} sockets but LISTEN_FDNAMES is not set; Meridian finds its sockets by name"
        ))
    })?;
    let names: Vec<Option<String>> = names.split(':').map(|name| Some(name.to_owned())).collect();
    if names.len() != count {
        return Err(SocketError::Inherit(format!(
            "LISTEN_FDS passes {count} sockets but LISTEN_FDNAMES names {}",
            names.len()
        )));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_counted() {
        assert_eq!(parse_names(None, 0).expect("none").len(), 0);
        let names = parse_names(Some("a.node:a.admin"), 2).expect("two");
        assert_eq!(
            names,
            vec![Some("a.node".to_owned()), Some("a.admin".to_owned())]
        );
        let error = parse_names(Some("a.node"), 2).expect_err("count differs");
        assert!(error.to_string().contains("names 1"), "{error}");
        let error = parse_names(None, 1).expect_err("names missing");
        assert!(error.to_string().contains("LISTEN_FDNAMES"), "{error}");
    }
}
