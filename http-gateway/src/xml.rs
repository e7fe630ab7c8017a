//! The API's XML bodies: request parsers and response writers (brief A4,
//! A5). Public so fuzz targets can drive the parsers.
//!
//! Parsing is lenient where SDKs differ and strict where a body is not XML:
//! the declaration and the `xmlns` are optional (Go sends neither), values
//! may be CDATA (Node) or escaped text, children come in any order, unknown
//! elements (with whatever they hold) are skipped, and names are matched by
//! their local part, so a namespace prefix does not matter. Not accepted: a
//! `<!DOCTYPE>` (no SDK sends one, and entity definitions have no business
//! in a message), a wrong root element, markup inside a value, text outside
//! the root, bodies that are not UTF-8, and anything that is not
//! well-formed. Line ends in values are normalized as XML 1.0 says (`\r\n`
//! and `\r` become `\n`); the writers escape `\r` so it survives the trip.
//!
//! Writing follows what the strictest SDK reads: escaped text, never CDATA
//! (PHP reads text nodes only), no namespace prefixes, optional elements left
//! out when empty (C# and PHP stumble on `<X/>`). Characters XML 1.0 cannot
//! carry at all (most control characters, U+FFFE, U+FFFF) are written as
//! U+FFFD: a message body holding them does not arrive byte for byte.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// The namespace of message documents (`<Message>`, `<Messages>`,
/// `<Errors>`), with its trailing slash as the SDKs send it.
pub const NAMESPACE: &str = "http://mq.aliyuncs.com/doc/v1/";
/// The namespace of `<Error>` documents: without the trailing slash, as the
/// Java SDK's JAXB binding expects (any other makes it report every error as
/// `InternalServerError`).
pub const ERROR_NAMESPACE: &str = "http://mq.aliyuncs.com/doc/v1";

/// Deepest element nesting accepted in a request.
const MAX_DEPTH: usize = 32;

/// Why a request body is not the expected XML document (400 `MalformedXML`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is empty; a <{root}> document was expected")]
    Empty { root: &'static str },
    #[error("the body is not well-formed XML (at byte {position}): {reason}")]
    NotWellFormed { position: u64, reason: String },
    #[error("the root element is <{found}>; <{expected}> was expected")]
    WrongRoot {
        expected: &'static str,
        found: String,
    },
    #[error("the body holds more than one root element")]
    SecondRoot,
    #[error("the body holds text outside the root element")]
    TextOutsideRoot,
    #[error("<{element}> must hold text only, but holds the element <{child}>")]
    MarkupInValue {
        element: &'static str,
        child: String,
    },
    #[error("<{element}> appears more than once")]
    Repeated { element: &'static str },
    #[error("<{root}> has no <{element}>")]
    Missing {
        root: &'static str,
        element: &'static str,
    },
    #[error("a document type declaration (<!DOCTYPE ...>) is not accepted")]
    DocumentType,
    #[error("the entity reference &{name}; is not one of XML's five or a character reference")]
    UnknownEntity { name: String },
    #[error("elements are nested more than {max} deep")]
    TooDeep { max: usize },
}

/// A publish request's `<Message>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// `<MessageBody>`, as sent (may be empty: the handler refuses that).
    pub body: String,
    /// `<MessageTag>`, trimmed; `None` when absent or blank.
    pub tag: Option<String>,
    /// `<Properties>` (`k:v|k:v|`), `None` when absent or empty.
    pub properties: Option<String>,
}

/// Parses a publish request body: `<Message>` with `<MessageBody>`
/// (required), `<MessageTag>` and `<Properties>`.
pub fn parse_publish(body: &[u8]) -> Result<PublishRequest, XmlError> {
    const ROOT: &str = "Message";
    let mut message_body = None;
    let mut request = PublishRequest::default();
    read_document(
        body,
        ROOT,
        &["MessageBody", "MessageTag", "Properties"],
        |element, value| {
            let slot = match element {
                "MessageBody" => &mut message_body,
                "MessageTag" => &mut request.tag,
                _ => &mut request.properties,
            };
            if slot.is_some() {
                return Err(XmlError::Repeated { element });
            }
            *slot = Some(value);
            Ok(())
        },
    )?;
    request.body = message_body.ok_or(XmlError::Missing {
        root: ROOT,
        element: "MessageBody",
    })?;
    request.tag = request
        .tag
        .map(|tag| tag.trim().to_owned())
        .filter(|tag| !tag.is_empty());
    request.properties = request.properties.filter(|text| !text.is_empty());
    Ok(request)
}

/// Parses an acknowledgement (or commit, rollback) body: `<ReceiptHandles>`
/// with `<ReceiptHandle>` elements, each trimmed, in order. An empty list
/// is not an error here (the handler answers `MissingReceiptHandle`).
pub fn parse_receipt_handles(body: &[u8]) -> Result<Vec<String>, XmlError> {
    let mut handles = Vec::new();
    read_document(body, "ReceiptHandles", &["ReceiptHandle"], |_, value| {
        handles.push(value.trim().to_owned());
        Ok(())
    })?;
    Ok(handles)
}

/// Reads a document whose root is `root`, calling `field` with the text of
/// each direct child of the root named in `fields`.
fn read_document(
    body: &[u8],
    root: &'static str,
    fields: &[&'static str],
    mut field: impl FnMut(&'static str, String) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(XmlError::Empty { root });
    }
    let mut reader = Reader::from_reader(body);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_unmatched_ends = false;
    config.expand_empty_elements = false;
    let not_well_formed = |reader: &Reader<&[u8]>, reason: String| XmlError::NotWellFormed {
        position: reader.error_position(),
        reason,
    };
    // Elements open around the current position (the root is depth 1).
    let mut depth = 0_usize;
    let mut seen_root = false;
    // The known field being read (a direct child of the root) and its text.
    let mut value: Option<(&'static str, String)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| not_well_formed(&reader, error.to_string()))?;
        match event {
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::DocType(_) => return Err(XmlError::DocumentType),
            Event::Start(start) => {
                check_attributes(&start).map_err(|reason| not_well_formed(&reader, reason))?;
                open(&start, depth, &mut seen_root, root, fields, &mut value)?;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooDeep { max: MAX_DEPTH });
                }
            }
            Event::Empty(start) => {
                check_attributes(&start).map_err(|reason| not_well_formed(&reader, reason))?;
                open(&start, depth, &mut seen_root, root, fields, &mut value)?;
                if let Some((element, text)) = value.take().filter(|_| depth == 1) {
                    field(element, text)?;
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1
                    && let Some((element, text)) = value.take()
                {
                    field(element, text)?;
                }
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|error| not_well_formed(&reader, error.to_string()))?;
                append(&mut value, depth, &text)?;
            }
            Event::CData(data) => {
                let text = data
                    .xml10_content()
                    .map_err(|error| not_well_formed(&reader, error.to_string()))?;
                append(&mut value, depth, &text)?;
            }
            Event::GeneralRef(reference) => {
                let name = reference
                    .decode()
                    .map_err(|error| not_well_formed(&reader, error.to_string()))?;
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => character.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| XmlError::UnknownEntity {
                            name: name.chars().take(32).collect(),
                        })?
                        .to_owned(),
                    Err(error) => return Err(not_well_formed(&reader, error.to_string())),
                };
                append(&mut value, depth, &resolved)?;
            }
        }
    }
    if depth != 0 {
        return Err(XmlError::NotWellFormed {
            position: reader.buffer_position(),
            reason: "the document ends before its elements are closed".to_owned(),
        });
    }
    if !seen_root {
        return Err(XmlError::WrongRoot {
            expected: root,
            found: "nothing".to_owned(),
        });
    }
    Ok(())
}

/// An element opens at `depth` (0: it is the root).
fn open(
    start: &BytesStart<'_>,
    depth: usize,
    seen_root: &mut bool,
    root: &'static str,
    fields: &[&'static str],
    value: &mut Option<(&'static str, String)>,
) -> Result<(), XmlError> {
    let local_name = start.local_name();
    let name = local_name.as_ref();
    match depth {
        0 if *seen_root => Err(XmlError::SecondRoot),
        0 if name != root.as_bytes() => Err(XmlError::WrongRoot {
            expected: root,
            found: String::from_utf8_lossy(name).chars().take(64).collect(),
        }),
        0 => {
            *seen_root = true;
            Ok(())
        }
        1 => {
            *value = fields
                .iter()
                .find(|field| field.as_bytes() == name)
                .map(|field| (*field, String::new()));
            Ok(())
        }
        // Inside a field: markup where text belongs. Inside an unknown
        // element: skipped with it.
        _ => match value {
            Some((element, _)) => Err(XmlError::MarkupInValue {
                element,
                child: String::from_utf8_lossy(name).chars().take(64).collect(),
            }),
            None => Ok(()),
        },
    }
}

/// Text at `depth`: part of the current field's value, ignored elsewhere in
/// the root, refused outside it (whitespace excepted).
fn append(
    value: &mut Option<(&'static str, String)>,
    depth: usize,
    text: &str,
) -> Result<(), XmlError> {
    match (depth, value) {
        (0, _) if !text.trim().is_empty() => Err(XmlError::TextOutsideRoot),
        (2, Some((_, value))) => {
            value.push_str(text);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Well-formed attributes (their values are not used).
fn check_attributes(start: &BytesStart<'_>) -> Result<(), String> {
    for attribute in start.attributes() {
        attribute.map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// One message of a consume answer, as the SDKs read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    /// Uppercase hex MD5 of the body.
    pub body_md5: String,
    pub body: String,
    /// Epoch milliseconds.
    pub publish_time_ms: i64,
    pub first_consume_time_ms: i64,
    pub next_consume_time_ms: i64,
    pub consumed_times: i64,
    /// Left out when empty.
    pub tag: String,
    /// `k:v|k:v|`, left out when empty.
    pub properties: String,
}

/// One failed handle of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleError {
    pub code: &'static str,
    pub message: String,
    pub receipt_handle: String,
}

/// A response document under construction.
struct Writer {
    out: String,
}

impl Writer {
    fn new(root: &str, namespace: &str) -> Self {
        let mut out = String::with_capacity(256);
        out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        out.push('\n');
        out.push('<');
        out.push_str(root);
        out.push_str(r#" xmlns=""#);
        out.push_str(namespace);
        out.push_str(r#"">"#);
        Writer { out }
    }

    fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// A required element: written even when empty.
    fn element(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name);
    }

    /// An optional element: left out when empty.
    fn optional(&mut self, name: &str, text: &str) {
        if !text.is_empty() {
            self.element(name, text);
        }
    }

    fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.out
    }
}

/// Appends `text` as XML character data: `&`, `<`, `>` and `"` escaped,
/// `\r` as a character reference, characters XML 1.0 forbids as U+FFFD.
pub fn escape_into(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(character),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(character),
        }
    }
}

/// The 201 answer to a publish; `receipt_handle` only for a transactional
/// message.
pub fn write_published(message_id: &str, body_md5: &str, receipt_handle: Option<&str>) -> String {
    let mut writer = Writer::new("Message", NAMESPACE);
    writer.element("MessageId", message_id);
    writer.element("MessageBodyMD5", body_md5);
    writer.optional("ReceiptHandle", receipt_handle.unwrap_or_default());
    writer.finish("Message")
}

/// The 200 answer to a consume (at least one message: none is a 404).
pub fn write_messages(messages: &[ConsumedMessage]) -> String {
    let mut writer = Writer::new("Messages", NAMESPACE);
    for message in messages {
        writer.open("Message");
        writer.element("MessageId", &message.message_id);
        writer.element("ReceiptHandle", &message.receipt_handle);
        writer.element("MessageBodyMD5", &message.body_md5);
        writer.element("MessageBody", &message.body);
        writer.element("PublishTime", &message.publish_time_ms.to_string());
        writer.element(
            "FirstConsumeTime",
            &message.first_consume_time_ms.to_string(),
        );
        writer.element("NextConsumeTime", &message.next_consume_time_ms.to_string());
        writer.element("ConsumedTimes", &message.consumed_times.to_string());
        writer.optional("MessageTag", &message.tag);
        writer.optional("Properties", &message.properties);
        writer.close("Message");
    }
    writer.finish("Messages")
}

/// An error answer: all four children, always (Python checks them).
pub fn write_error(code: &str, message: &str, request_id: &str, host_id: &str) -> String {
    let mut writer = Writer::new("Error", ERROR_NAMESPACE);
    writer.element("Code", code);
    writer.element("Message", message);
    writer.element("RequestId", request_id);
    writer.element("HostId", host_id);
    writer.finish("Error")
}

/// The 404 answer to an acknowledgement some of whose handles failed: those
/// only, each with exactly `ErrorCode`, `ErrorMessage` and `ReceiptHandle`.
pub fn write_handle_errors(errors: &[HandleError]) -> String {
    let mut writer = Writer::new("Errors", NAMESPACE);
    for error in errors {
        writer.open("Error");
        writer.element("ErrorCode", error.code);
        writer.element("ErrorMessage", &error.message);
        writer.element("ReceiptHandle", &error.receipt_handle);
        writer.close("Error");
    }
    writer.finish("Errors")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_PUBLISH: &str = r#"<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mq.aliyuncs.com/doc/v1/"><MessageBody>hello</MessageBody><Properties>KEYS:k1|a:1|</Properties><MessageTag>TagA</MessageTag></Message>"#;

    fn hello() -> PublishRequest {
        PublishRequest {
            body: "hello".to_owned(),
            tag: Some("TagA".to_owned()),
            properties: Some("KEYS:k1|a:1|".to_owned()),
        }
    }

    #[test]
    fn publish_as_python_sends_it() {
        assert_eq!(parse_publish(PYTHON_PUBLISH.as_bytes()), Ok(hello()));
    }

    #[test]
    fn publish_without_declaration_or_namespace_in_any_order() {
        let go = "<Message><MessageTag>TagA</MessageTag><Properties>KEYS:k1|a:1|</Properties><MessageBody>hello</MessageBody></Message>";
        assert_eq!(parse_publish(go.as_bytes()), Ok(hello()));
        let prefixed = r#"<mq:Message xmlns:mq="http://mq.aliyuncs.com/doc/v1/"><mq:MessageBody>hello</mq:MessageBody><mq:MessageTag>TagA</mq:MessageTag><mq:Properties>KEYS:k1|a:1|</mq:Properties></mq:Message>"#;
        assert_eq!(parse_publish(prefixed.as_bytes()), Ok(hello()));
    }

    #[test]
    fn publish_with_cdata_escapes_and_unknown_elements() {
        let node = "\u{feff}<?xml version=\"1.0\"?>\n<Message xmlns=\"http://mq.aliyuncs.com/doc/v1/\">\n  <!-- a comment -->\n  <Extra><Deep a=\"1\">x</Deep></Extra>\n  <MessageBody><![CDATA[<b>&amp;</b>]]> &amp; &#x263A;&#65;&lt;&gt;&quot;&apos;</MessageBody>\n  <MessageTag><![CDATA[TagA]]></MessageTag>\n  <Empty/>\n</Message>\n";
        let parsed = parse_publish(node.as_bytes()).expect("parses");
        assert_eq!(parsed.body, "<b>&amp;</b> & \u{263a}A<>\"'");
        assert_eq!(parsed.tag.as_deref(), Some("TagA"));
        assert_eq!(parsed.properties, None);
    }

    #[test]
    fn publish_line_ends_are_normalized() {
        let body = "<Message><MessageBody>a\r\nb\rc&#13;d</MessageBody></Message>";
        assert_eq!(
            parse_publish(body.as_bytes()).expect("parses").body,
            "a\nb\nc\rd"
        );
    }

    #[test]
    fn publish_refusals_name_what_is_wrong() {
        type Expected = fn(&XmlError) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("", |error| matches!(error, XmlError::Empty { .. })),
            ("  \n", |error| matches!(error, XmlError::Empty { .. })),
            ("hello", |error| {
                matches!(
                    error,
                    XmlError::TextOutsideRoot | XmlError::WrongRoot { .. }
                )
            }),
            ("<Messages/>", |error| {
                matches!(error, XmlError::WrongRoot { .. })
            }),
            ("<Message><MessageTag>a</MessageTag></Message>", |error| {
                matches!(
                    error,
                    XmlError::Missing {
                        element: "MessageBody",
                        ..
                    }
                )
            }),
            (
                "<Message><MessageBody>a</MessageBody><MessageBody>b</MessageBody></Message>",
                |error| matches!(error, XmlError::Repeated { .. }),
            ),
            (
                "<Message><MessageBody>a<b/></MessageBody></Message>",
                |error| matches!(error, XmlError::MarkupInValue { .. }),
            ),
            ("<Message><MessageBody>a</MessageTag></Message>", |error| {
                matches!(error, XmlError::NotWellFormed { .. })
            }),
            ("<Message><MessageBody>a</MessageBody>", |error| {
                matches!(error, XmlError::NotWellFormed { .. })
            }),
            (
                "<Message><MessageBody>a &nbsp;</MessageBody></Message>",
                |error| matches!(error, XmlError::UnknownEntity { .. }),
            ),
            (
                "<Message><MessageBody>a & b</MessageBody></Message>",
                |error| matches!(error, XmlError::NotWellFormed { .. }),
            ),
            ("<Message/><Message/>", |error| {
                matches!(error, XmlError::SecondRoot)
            }),
            ("<Message/>trailing", |error| {
                matches!(error, XmlError::TextOutsideRoot)
            }),
            (
                "<!DOCTYPE x [<!ENTITY a \"b\">]><Message><MessageBody>&a;</MessageBody></Message>",
                |error| matches!(error, XmlError::DocumentType),
            ),
            (
                "<Message a=><MessageBody>x</MessageBody></Message>",
                |error| matches!(error, XmlError::NotWellFormed { .. }),
            ),
        ];
        for (body, expected) in cases {
            let error = parse_publish(body.as_bytes()).expect_err(body);
            assert!(expected(&error), "{body:?} gave {error:?}");
        }
        let invalid_utf8 = b"<Message><MessageBody>\xff\xfe</MessageBody></Message>";
        assert!(matches!(
            parse_publish(invalid_utf8),
            Err(XmlError::NotWellFormed { .. })
        ));
        let deep = format!(
            "<Message>{}{}</Message>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert_eq!(
            parse_publish(deep.as_bytes()),
            Err(XmlError::TooDeep { max: MAX_DEPTH })
        );
    }

    #[test]
    fn receipt_handles_in_order() {
        let python = r#"<?xml version="1.0" encoding="utf-8"?><ReceiptHandles xmlns="http://mq.aliyuncs.com/doc/v1/"><ReceiptHandle>h1</ReceiptHandle><ReceiptHandle> h2 </ReceiptHandle><Other>x</Other><ReceiptHandle><![CDATA[h3]]></ReceiptHandle></ReceiptHandles>"#;
        assert_eq!(
            parse_receipt_handles(python.as_bytes()),
            Ok(vec!["h1".to_owned(), "h2".to_owned(), "h3".to_owned()])
        );
        assert_eq!(parse_receipt_handles(b"<ReceiptHandles/>"), Ok(Vec::new()));
        // Python's encoder for an empty list.
        assert_eq!(
            parse_receipt_handles(br#"<ReceiptHandles xmlns="x"></ReceiptHandles>"#),
            Ok(Vec::new())
        );
        assert_eq!(
            parse_receipt_handles(b"<ReceiptHandles><ReceiptHandle/></ReceiptHandles>"),
            Ok(vec![String::new()])
        );
        assert!(matches!(
            parse_receipt_handles(b"<Message/>"),
            Err(XmlError::WrongRoot { .. })
        ));
    }

    #[test]
    fn responses_are_escaped_text_without_cdata() {
        let published = write_published("ID1", "5D41402ABC4B2A76B9719D911017C592", None);
        assert_eq!(
            published,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Message xmlns=\"http://mq.aliyuncs.com/doc/v1/\"><MessageId>ID1</MessageId><MessageBodyMD5>5D41402ABC4B2A76B9719D911017C592</MessageBodyMD5></Message>"
        );
        let transactional = write_published("ID1", "MD5", Some("t1.a.b"));
        assert!(transactional.contains("<ReceiptHandle>t1.a.b</ReceiptHandle>"));
        let message = ConsumedMessage {
            message_id: "ID".to_owned(),
            receipt_handle: "H".to_owned(),
            body_md5: "M".to_owned(),
            body: "<a> & \"b\"\r\n\u{1}]]>".to_owned(),
            publish_time_ms: 1,
            first_consume_time_ms: 2,
            next_consume_time_ms: 3,
            consumed_times: 4,
            tag: String::new(),
            properties: String::new(),
        };
        let written = write_messages(std::slice::from_ref(&message));
        assert!(!written.contains("CDATA"));
        assert!(written.contains(
            "<MessageBody>&lt;a&gt; &amp; &quot;b&quot;&#13;\n\u{fffd}]]&gt;</MessageBody>"
        ));
        assert!(!written.contains("MessageTag"), "empty optional left out");
        assert!(!written.contains("Properties"), "empty optional left out");
        assert!(written.contains("<ConsumedTimes>4</ConsumedTimes>"));
        // What is written reads back as it was (apart from U+0001).
        let mut reader = Reader::from_str(&written);
        let mut body = String::new();
        let mut in_body = false;
        loop {
            match reader.read_event().expect("well-formed") {
                Event::Start(start) => in_body = start.local_name().as_ref() == b"MessageBody",
                Event::End(_) => in_body = false,
                Event::Text(text) if in_body => {
                    body.push_str(&text.xml10_content().expect("utf-8"));
                }
                Event::GeneralRef(reference) if in_body => {
                    let name = reference.decode().expect("utf-8").into_owned();
                    match reference.resolve_char_ref().expect("valid") {
                        Some(character) => body.push(character),
                        None => body.push_str(
                            quick_xml::escape::resolve_predefined_entity(&name).expect("known"),
                        ),
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(body, "<a> & \"b\"\r\n\u{fffd}]]>");
    }

    #[test]
    fn errors_carry_all_four_children_and_the_namespace_without_slash() {
        let written = write_error("MessageNotExist", "Message not exist.", "R1", "http://h:1");
        assert_eq!(
            written,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error xmlns=\"http://mq.aliyuncs.com/doc/v1\"><Code>MessageNotExist</Code><Message>Message not exist.</Message><RequestId>R1</RequestId><HostId>http://h:1</HostId></Error>"
        );
        let handles = write_handle_errors(&[HandleError {
            code: "ReceiptHandleError",
            message: "bad <handle>".to_owned(),
            receipt_handle: "h&1".to_owned(),
        }]);
        assert!(handles.contains(
            "<Error><ErrorCode>ReceiptHandleError</ErrorCode><ErrorMessage>bad &lt;handle&gt;</ErrorMessage><ReceiptHandle>h&amp;1</ReceiptHandle></Error>"
        ));
        assert!(handles.contains(r#"<Errors xmlns="http://mq.aliyuncs.com/doc/v1/">"#));
    }

    /// What the writer makes of `text`: XML 1.0's forbidden characters as
    /// U+FFFD.
    fn writable(text: &str) -> String {
        text.chars()
            .map(|character| match character {
                '\t' | '\n' | '\r' => character,
                '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
                _ => character,
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn any_text_written_reads_back(text in "\\PC*|[\\x00-\\x7f]*|.*") {
            let mut document = String::from("<Message><MessageBody>");
            escape_into(&mut document, &text);
            document.push_str("</MessageBody></Message>");
            let parsed = parse_publish(document.as_bytes()).expect("what the writer writes parses");
            proptest::prop_assert_eq!(parsed.body, writable(&text));
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_publish(&bytes);
            let _ = parse_receipt_handles(&bytes);
        }

        #[test]
        fn any_handles_written_read_back(handles in proptest::collection::vec("[^\\s]{1,40}", 0..20)) {
            let mut document = String::from("<ReceiptHandles>");
            for handle in &handles {
                document.push_str("<ReceiptHandle>");
                escape_into(&mut document, handle);
                document.push_str("</ReceiptHandle>");
            }
            document.push_str("</ReceiptHandles>");
            let expected: Vec<String> = handles.iter().map(|handle| writable(handle).trim().to_owned()).collect();
            proptest::prop_assert_eq!(parse_receipt_handles(document.as_bytes()).expect("parses"), expected);
        }
    }
}
