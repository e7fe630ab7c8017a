//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so the
//! build needs no system `protoc`.

/// The messages of `admin.proto`, but ResetGroupRequest (an attribute for it
/// would reach its `oneof` too; the HTTP API takes its own body for resets).
const ADMIN_MESSAGES: [&str; 28] = [
    "ListTopicsRequest",
    "TopicSummary",
    "ListTopicsResponse",
    "DescribeTopicRequest",
    "QueueOffsets",
    "TopicDescription",
    "ListGroupsRequest",
    "GroupSummary",
    "ListGroupsResponse",
    "DescribeGroupRequest",
    "GroupQueueProgress",
    "GroupDescription",
    "QueuePosition",
    "ResetGroupResponse",
    "QueryMessagesRequest",
    "MessageSummary",
    "QueryMessagesResponse",
    "GetMessageRequest",
    "TracedMessage",
    "TraceStep",
    "GetMessageResponse",
    "TopicDefinition",
    "DeleteTopicRequest",
    "DeleteTopicResponse",
    "GroupDefinition",
    "DeleteGroupRequest",
    "DeleteGroupResponse",
    "ExportTopologyResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/apache/rocketmq/v2/definition.proto",
        "proto/apache/rocketmq/v2/service.proto",
        "proto/meridian/v1/record.proto",
        "proto/meridian/v1/node.proto",
        "proto/meridian/v1/admin.proto",
        "proto/meridian/v1/replication.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true);
    // The admin API is also JSON over HTTP: its messages are (de)serialized
    // with serde, field for field, and described in the node's OpenAPI
    // document by utoipa.
    for message in ADMIN_MESSAGES {
        config = config.type_attribute(
            format!(".meridian.v1.{message}"),
            "#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)] #[serde(default)]",
        );
    }
    // Request bodies a person types: a misspelt field is refused, not ignored.
    for message in ["TopicDefinition", "GroupDefinition"] {
        config = config.type_attribute(
            format!(".meridian.v1.{message}"),
            "#[serde(deny_unknown_fields)]",
        );
    }
    config = config.field_attribute(
        ".meridian.v1.TracedMessage.body",
        "#[serde(with = \"crate::json_bytes\")] #[schema(value_type = Option<String>, \
             format = Byte)]",
    );
    config.compile_fds(descriptors)?;
    Ok(())
}
