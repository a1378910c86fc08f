//! A GraphQL client over WebSocket (`graphql-transport-ws`), for the
//! tests and the benchmark of the subscription at `/graphql/ws`.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A connection to `/graphql/ws`.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` connection to `{base_url}/graphql/ws`,
/// initialised with `payload`; `None` when the server closes it instead of
/// acknowledging.
pub async fn connect(base_url: &str, payload: Value) -> Option<Socket> {
    let url = format!("{}/graphql/ws", base_url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}"));
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("graphql-transport-ws")
    );
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    match receive(&mut socket).await {
        Some(ack) if ack["type"] == json!("connection_ack") => Some(socket),
        Some(other) => panic!("expected connection_ack, got {other}"),
        None => None,
    }
}

/// Sends one message.
pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The next message (pings answered), or `None` when the server closed the
/// connection. Panics after 10 s without one.
pub async fn receive(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message within 10 s"))?;
        match message {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
                if value["type"] == json!("ping") {
                    send(socket, json!({ "type": "pong" })).await;
                    continue;
                }
                return Some(value);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Starts subscription `id`: `query` with `variables`.
pub async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }),
    )
    .await;
}
