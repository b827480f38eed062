//! Forwarding one request: the upstream target, the scrubbed headers, the
//! body under the size limit, and the answer streamed back.

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{uri, Method};
use axum::response::Response;

use super::h1::{self, Answer, Outgoing, Target};
use super::headers;
use super::{refusal, Gateway};
use crate::conn::Sender;
use crate::core::Principal;
use crate::error::Error;

impl Gateway {
    /// Sends the request upstream and streams the answer back.
    /// `sender`'s in-flight mark is held until the answer has streamed out.
    /// `made_id`: the request id made for a request that brought none of
    /// its own (it is not in `req`'s headers), sent as `X-Request-Id`.
    pub async fn forward(
        &self,
        req: Request,
        principal: Option<&Principal>,
        sender: Sender,
        made_id: Option<&[u8]>,
        max_body: usize,
    ) -> Response {
        match self
            .try_forward(req, principal, sender, made_id, max_body)
            .await
        {
            Ok(resp) => resp,
            Err(e) => refusal(e),
        }
    }

    async fn try_forward(
        &self,
        req: Request,
        principal: Option<&Principal>,
        sender: Sender,
        made_id: Option<&[u8]>,
        max_body: usize,
    ) -> Result<Response, Error> {
        let (mut parts, body) = req.into_parts();
        // The request's own head is reused: its header map is scrubbed in
        // place, its target (as received) moved into the upstream URI.
        let pq = std::mem::take(&mut parts.uri).into_parts().path_and_query;
        let target = if self.base_path.is_empty() {
            pq.unwrap_or_else(|| uri::PathAndQuery::from_static("/"))
        } else {
            let pq = pq.as_ref().map(|pq| pq.as_str()).unwrap_or("/");
            uri::PathAndQuery::try_from(format!("{}{pq}", self.base_path))
                .map_err(|_| Error::MalformedTarget("unparseable path"))?
        };
        // The request line: origin-form, or (CONNECT) the upstream's
        // authority.
        let target = if parts.method == Method::CONNECT {
            Target::Authority(self.authority.clone())
        } else {
            Target::Origin(target)
        };

        let mut headers = parts.headers;
        let peer = sender.client.map(|c| c.peer);
        let trusted = sender.client.is_some_and(|c| c.peer_trusted);
        let original_host = headers::scrub_request(&mut headers, trusted);
        // What the gateway adds goes out after the map's headers.
        let mut added = headers::Added::new();
        added.host(&self.host);
        headers::set_forwarding(&mut headers, &mut added, peer, trusted, original_host);
        if let Some(id) = made_id {
            added.request_id(id);
        }
        if let Some(p) = principal {
            headers::identity_headers(&mut added, p);
        }

        // A body of known length within the limit (a verified body, a
        // length the front has checked, none at all) goes as it is; any
        // other is counted as it streams.
        let body = if body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= max_body as u64)
        {
            body
        } else {
            Body::new(http_body_util::Limited::new(body, max_body))
        };
        let out = Outgoing {
            method: parts.method,
            target,
            headers,
            added,
            body,
        };

        let resp = match tokio::time::timeout(self.config.timeout, h1::send(&self.pool, out)).await
        {
            Err(_) => return Err(Error::UpstreamTimeout(self.config.timeout.as_secs())),
            Ok(Err(e)) => {
                if source_is::<http_body_util::LengthLimitError>(&e) {
                    return Err(Error::BodyTooLarge(max_body));
                }
                if crate::conn::is_body_timeout(&e) {
                    return Err(Error::RequestTimeout(
                        "the whole body must arrive within the body timeout",
                    ));
                }
                // The client's own body broke off or was malformed (a bad
                // chunk): its fault, not the upstream's.
                if source_is::<axum::Error>(&e) {
                    return Err(Error::BadRequest(
                        "the request body could not be read".into(),
                    ));
                }
                tracing::warn!(error = %chain(&e), connect = e.is_connect(), "upstream request failed");
                return Err(Error::UpstreamUnavailable(if e.is_malformed() {
                    "the upstream's answer could not be relayed".into()
                } else {
                    "the upstream could not be reached or closed the connection".into()
                }));
            }
            Ok(Ok(sent)) => sent,
        };
        let (mut rparts, rbody) = resp.into_parts();
        headers::scrub_answer(&mut rparts.headers);
        let body = Streamed {
            body: rbody,
            _busy: sender.in_flight,
        };
        Ok(Response::from_parts(rparts, Body::new(body)))
    }
}

/// An upstream's answer body, holding its connection's in-flight mark
/// until it ends or is dropped (boxed once, as the bare body was). The
/// upstream connection's fate (back to the pool at the end, closed when
/// dropped before) is the body's own (`h1::Answer`).
struct Streamed {
    body: Answer,
    _busy: Option<crate::conn::InFlight>,
}

impl axum::body::HttpBody for Streamed {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
