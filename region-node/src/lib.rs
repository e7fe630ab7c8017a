//! The region node: stores and serves one region's messages.
//!
//! * `storage`: the commit log, consume queues, deduplication index and
//!   consumer-group state, behind a trait that never names RocksDB.
//! * `commit`: group commit of concurrent appends into one storage batch.
//! * `rules`: the checks every record passes before it is stored.
//! * `consumer`: consumer groups (receive, invisibility, ack, redelivery,
//!   long polling).
//! * `grpc`: the node's RocketMQ backend (behind `meridian-face`) for clients
//!   and the internal `NodeService` (health, tail, apply, checkpoints) for
//!   Meridian's processes.
//!
//! The crate exposes only what the `meridian` binary uses: start a node with
//! [`Node::open`] (takes the data-directory lock and opens storage) and then
//! [`Node::serve`] on listeners the caller bound; errors are [`StartError`].
//!
//! This crate must not depend on the replicator or router crates; they talk
//! to the node only through the `meridian.v1.NodeService` API.
//!
//! Without the default feature `rocksdb` there is no storage to open, so no
//! `Node`: the crate then builds only for the cargo-fuzz targets of its
//! decoders (`fuzzing`), and the server code nothing reaches is not linted
//! as dead.
#![cfg_attr(not(feature = "rocksdb"), allow(dead_code, unused_imports))]

mod acks;
#[doc(hidden)]
pub mod bench_support;
mod catalog;
mod commit;
mod consumer;
mod dead_letter;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http_admin;
mod retention;
mod rules;
mod storage;
#[cfg(test)]
mod test_records;
mod timers;
mod trace;
mod transactions;

pub use error::StartError;
use tonic::service::interceptor::InterceptedService;

use commit::CommitLog;
use consumer::ConsumerEngine;
use grpc::NodeContext;
use meridian_face::incoming::{Limits, incoming, server};
use meridian_face::tls::{Alpn, ServerTls};
use meridian_proto::GRPC_MAX_DECODE_BYTES;
use meridian_proto::meridian::v1::admin_service_server::AdminServiceServer;
use meridian_proto::meridian::v1::node_service_server::NodeServiceServer;
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use meridian_topology::Topology;
use std::fs::File;
use std::sync::Arc;
#[cfg(feature = "rocksdb")]
use storage::RocksStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An opened node: its data directory is locked and its storage is open.
#[cfg(feature = "rocksdb")]
pub struct Node {
    topology: Arc<Topology>,
    region: String,
    store: Arc<RocksStore>,
    /// Who may use the HTTP and STOMP faces (the topology's `[access]`).
    authentication: meridian_face::access::Authentication,
    /// TLS on every listener (the topology's `[client_tls]`), if any.
    tls: Option<ServerTls>,
    _lock: File,
}

/// The sockets a node serves on, bound by the caller.
pub struct Listeners {
    /// RocketMQ 5 gRPC for clients (the topology's `node`).
    pub node: TcpListener,
    /// `NodeService`, `AdminService` and the JSON admin API (`admin`).
    pub admin: TcpListener,
    /// The Aliyun MQ HTTP API and the JSON REST API (`http`), if served.
    pub http: Option<TcpListener>,
    /// STOMP 1.2 (`stomp`), if served.
    pub stomp: Option<TcpListener>,
}

#[cfg(feature = "rocksdb")]
impl Node {
    /// Locks `<data_dir>/node/LOCK` and opens storage in `<data_dir>/node/db`.
    /// Fails with [`StartError::Locked`] if another process holds the lock.
    pub fn open(topology: Topology, region: &str) -> Result<Self, StartError> {
        let config = topology.region(region)?;
        let directory = config.data_dir.join("node");
        std::fs::create_dir_all(&directory).map_err(|source| StartError::DataDir {
            path: directory.clone(),
            source,
        })?;
        let lock_path = directory.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StartError::DataDir {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StartError::Locked {
                    path: config.data_dir.clone(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StartError::DataDir {
                    path: lock_path,
                    source,
                });
            }
        }
        let authentication =
            meridian_face::access::Authentication::of_topology(topology.access.as_ref())?;
        let tls = ServerTls::of_topology(&topology, region)?;
        let memory_bytes = usize::try_from(config.storage_memory_mb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024);
        let store = Arc::new(RocksStore::open_with_memory(
            &directory.join("db"),
            config.flush,
            memory_bytes,
        )?);
        tracing::info!(region, data_dir = %config.data_dir.display(), flush = ?config.flush, "node storage open");
        Ok(Self {
            topology: Arc::new(topology),
            region: region.to_owned(),
            store,
            authentication,
            tls,
            _lock: lock,
        })
    }

    /// Serves clients on `listeners.node` (RocketMQ 5 gRPC), `http` and
    /// `stomp`, and Meridian's processes on `admin` until `shutdown` fires;
    /// then stops taking requests, finishes queued writes and returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), StartError> {
        let Listeners {
            node: node_listener,
            admin: admin_listener,
            http: http_listener,
            stomp: stomp_listener,
        } = listeners;
        let node_address = node_listener
            .local_addr()
            .map_err(|source| StartError::Listener {
                what: "node (RocketMQ gRPC)",
                source,
            })?;
        let admin_address = admin_listener
            .local_addr()
            .map_or_else(|_| "admin".to_owned(), |address| address.to_string());
        let tasks = TaskTracker::new();
        let writer_shutdown = CancellationToken::new();
        let commit = CommitLog::start(
            self.store.clone(),
            self.region.clone(),
            &tasks,
            writer_shutdown.clone(),
        )?;
        let consumers = Arc::new(ConsumerEngine::load(
            self.store.clone(),
            self.region.clone(),
        )?);
        let last_sequence = commit.last_sequence();
        let mut unconfirmed_at_start = Vec::new();
        for peer in self.topology.replication_neighbours(&self.region) {
            let acked_through_sequence = storage::LogStore::checkpoint(self.store.as_ref(), peer)?;
            if acked_through_sequence < last_sequence {
                tracing::info!(
                    peer,
                    acked_through_sequence,
                    last_sequence,
                    "records the peer has not confirmed; the replicator sends them"
                );
            }
            unconfirmed_at_start.push(meridian_proto::meridian::v1::UnconfirmedAtStart {
                peer_region: peer.to_owned(),
                acked_through_sequence,
                last_sequence,
            });
        }
        let checkpoints = tokio::sync::watch::Sender::new(
            unconfirmed_at_start
                .iter()
                .map(|entry| (entry.peer_region.clone(), entry.acked_through_sequence))
                .collect(),
        );
        let (tracer, trace_events) = trace::Tracer::new(&self.region);
        let context = Arc::new(NodeContext {
            region: self.region.clone(),
            topology: catalog::LiveTopology::new(
                (*self.topology).clone(),
                &self.region,
                &storage::LogStore::catalog(self.store.as_ref())?,
            ),
            store: self.store.clone(),
            commit,
            consumers,
            node_address,
            started_at_ms: grpc::convert::now_ms(),
            reused_client_ids: std::sync::atomic::AtomicU64::new(0),
            waiting_receives: consumer::WaitingReceives::default(),
            unconfirmed_at_start,
            checkpoints,
            receive_attempts: grpc::ReceiveAttempts::default(),
            transactions: transactions::Transactions::default(),
            tracer,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        tasks.spawn(timers::run(context.clone()));
        tasks.spawn(timers::sweep_dead_letters(context.clone()));
        tasks.spawn(retention::run(context.clone()));
        tasks.spawn(transactions::run(context.clone()));
        tasks.spawn(trace::run(context.clone(), trace_events));
        // Every face's calls pass the access keys' grants first.
        let backend = Arc::new(meridian_face::Guarded::new(
            grpc::NodeBackend::new(context.clone()),
            self.authentication.clone(),
        ));
        let face = meridian_face::Face::new(backend.clone(), tasks.clone(), shutdown.clone());
        // The HTTP and STOMP faces use the same backend as RocketMQ's.
        let tls_with = |alpn| self.tls.as_ref().map(|tls| tls.with_alpn(alpn));
        let http_server = http_listener.map(|listener| {
            let config = meridian_http::Config {
                region: self.region.clone(),
                authentication: self.authentication.clone(),
                limits: meridian_http::Limits::default(),
                tls: tls_with(Alpn::Http1),
            };
            meridian_http::serve(listener, backend.clone(), config, shutdown.clone())
        });
        let stomp_server = stomp_listener.map(|listener| {
            let config = meridian_stomp::Config {
                region: self.region.clone(),
                authentication: self.authentication.clone(),
                limits: meridian_stomp::Limits::default(),
                tls: tls_with(Alpn::None),
            };
            meridian_stomp::serve(listener, backend.clone(), config, shutdown.clone())
        });
        context.transactions.set_producers(face.producers());
        let messaging = MessagingServiceServer::new(face)
            .max_decoding_message_size(GRPC_MAX_DECODE_BYTES)
            .max_encoding_message_size(GRPC_MAX_DECODE_BYTES);
        // The admin port answers only keys granted `admin` (the
        // deployment's own processes sign with its internal key).
        let admin_guard = meridian_face::access::AdminGuard::new(self.authentication.clone());
        let internal = InterceptedService::new(
            NodeServiceServer::new(grpc::internal::Internal::new(context.clone()))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            admin_guard.clone(),
        );
        let limits = Limits::default();
        let client_server = server(&limits)
            .add_service(messaging)
            .serve_with_incoming_shutdown(
                incoming(node_listener, limits, tls_with(Alpn::Grpc)),
                shutdown.clone().cancelled_owned(),
            );
        // gRPC (HTTP/2) and the JSON admin API (HTTP/1.1 or 2) on one port.
        let admin = Arc::new(grpc::admin::Admin::new(context.clone()));
        let admin_server = server(&limits)
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(http_admin::router(
                admin.clone(),
                self.authentication.clone(),
            )))
            .add_service(internal)
            .add_service(InterceptedService::new(
                AdminServiceServer::from_arc(admin),
                admin_guard,
            ))
            .serve_with_incoming_shutdown(
                incoming(admin_listener, limits, tls_with(Alpn::GrpcAndHttp1)),
                shutdown.clone().cancelled_owned(),
            );
        tracing::info!(
            region = %self.region,
            node = %node_address,
            admin = %admin_address,
            tls = self.tls.is_some(),
            "node serving"
        );
        let other_faces = async {
            let (http, stomp) = tokio::join!(
                async {
                    match http_server {
                        Some(server) => server.await.map_err(|source| StartError::Face {
                            what: "HTTP",
                            source,
                        }),
                        None => Ok(()),
                    }
                },
                async {
                    match stomp_server {
                        Some(server) => server.await.map_err(|source| StartError::Face {
                            what: "STOMP",
                            source,
                        }),
                        None => Ok(()),
                    }
                }
            );
            http.and(stomp)
        };
        let (client_result, admin_result, faces_result) =
            tokio::join!(client_server, admin_server, other_faces);
        drop(context);
        writer_shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!(region = %self.region, "node stopped");
        client_result.map_err(|source| StartError::Serve {
            address: node_address.to_string(),
            source,
        })?;
        admin_result.map_err(|source| StartError::Serve {
            address: admin_address,
            source,
        })?;
        faces_result
    }
}
