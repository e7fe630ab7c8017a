//! The relays over loopback: real sockets, OS-chosen ports, timings
//! asserted with generous upper bounds.

mod support;
mod tcp;
mod udp;
