//! The one place where domain errors become HTTP answers: a status, a
//! stable `error` code and the vendor's body
//! `{"error", "error_description", "Message", "status"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;
use crate::web::trace::ErrorCode;

/// An [`Error`] on its way out.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: String,
    #[serde(rename = "Message")]
    message: &'a str,
    status: u16,
    #[serde(rename = "serverTime", skip_serializing_if = "Option::is_none")]
    server_time: Option<u64>,
}

/// Status, code and short human text for each error.
pub fn classify(e: &Error) -> (StatusCode, &'static str, &'static str) {
    use armor_psk::Error as P;
    match e {
        Error::Psk { err, .. } => match err {
            P::ReplayStoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                err.code(),
                "The replay store is unavailable; try again shortly.",
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                err.code(),
                "Authorization has been denied for this request.",
            ),
        },
        Error::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Authorization has been denied for this request.",
        ),
        Error::InvalidCredentials => (
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "The user name or password is incorrect.",
        ),
        Error::MfaRequired => (
            StatusCode::UNAUTHORIZED,
            "mfa_required",
            "A second-factor code is required.",
        ),
        Error::InvalidMfaCode => (
            StatusCode::BAD_REQUEST,
            "invalid_mfa_code",
            "The second-factor code is incorrect.",
        ),
        Error::InvalidCode => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The authorization code is invalid.",
        ),
        Error::ApiKeyNotAllowed => (
            StatusCode::FORBIDDEN,
            "api_key_not_allowed",
            "API keys cannot be used on this route.",
        ),
        Error::KeyExpired => (
            StatusCode::UNAUTHORIZED,
            "key_expired",
            "This API key has expired.",
        ),
        Error::IpNotAllowed => (
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "This API key may not be used from this address.",
        ),
        Error::RouteNotAllowed => (
            StatusCode::FORBIDDEN,
            "route_not_allowed",
            "This API key may not call this route.",
        ),
        Error::PermissionDenied(_) => (
            StatusCode::FORBIDDEN,
            "permission_denied",
            "You do not have permission to do this.",
        ),
        Error::InvalidAccountContext => (
            StatusCode::FORBIDDEN,
            "invalid_account_context",
            "The account context is not valid for you.",
        ),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found."),
        Error::BadRequest(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is invalid.",
        ),
        Error::MalformedTarget(_) => (
            StatusCode::BAD_REQUEST,
            "malformed_request_target",
            "The request path is invalid.",
        ),
        Error::BodyTooLarge(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The request body is too large.",
        ),
        Error::Conflict(_) => (
            StatusCode::CONFLICT,
            "conflict",
            "The request conflicts with the current state.",
        ),
        Error::RequestTimeout(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "The request did not arrive in time.",
        ),
        Error::MethodNotAllowed(_) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The requested resource does not support this method.",
        ),
        Error::StoreUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The service is unavailable; try again shortly.",
        ),
        Error::RateLimited { .. } | Error::KeyRateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests; slow down.",
        ),
        Error::Busy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "The server is busy; try again shortly.",
        ),
        Error::UpstreamUnavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "The upstream service is unavailable.",
        ),
        Error::UpstreamTimeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "The upstream service did not answer in time.",
        ),
        Error::Config(_) | Error::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "An error has occurred.",
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = classify(&self.0);
        if matches!(
            self.0,
            Error::UpstreamUnavailable(_) | Error::UpstreamTimeout(_)
        ) {
            // Gateway failures are the gateway's own: RFC 9457 problem+json.
            let body = serde_json::json!({
                "type": format!("urn:armor:error:{code}"),
                "title": message,
                "status": status.as_u16(),
                "detail": self.0.to_string(),
                "error": code,
            });
            let mut resp = (status, body.to_string()).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            resp.extensions_mut().insert(ErrorCode(code));
            return resp;
        }
        let description = match &self.0 {
            Error::Psk {
                detail: Some(d), ..
            } => format!("{}. {d}", self.0),
            Error::Internal(detail) | Error::Config(detail) => {
                tracing::error!(error = %detail, "internal error");
                "An internal error occurred; it has been logged.".to_owned()
            }
            other => other.to_string(),
        };
        let server_time = match &self.0 {
            Error::Psk {
                err: armor_psk::Error::TimestampOutOfWindow { server_time },
                ..
            } => Some(*server_time),
            _ => None,
        };
        let body = Body {
            error: code,
            error_description: description,
            message,
            status: status.as_u16(),
            server_time,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        // For the request's trace span (web::trace), which logs it.
        resp.extensions_mut().insert(ErrorCode(code));
        if let Error::RateLimited { retry_after } | Error::Busy { retry_after } = self.0 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let Error::KeyRateLimited { limit, reset } = self.0 {
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(reset));
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("ratelimit-reset", HeaderValue::from(reset));
        }
        if status == StatusCode::UNAUTHORIZED {
            let scheme = match self.0 {
                Error::InvalidToken => "FH-AUTH",
                _ => "ARMOR-PSK",
            };
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status_and_code() {
        use armor_psk::Error as P;
        let psk = |err| Error::Psk { err, detail: None };
        let cases: Vec<(Error, u16, &str)> = vec![
            (psk(P::MissingAuthorization), 401, "missing_authorization"),
            (
                psk(P::Parse(armor_psk::ParseError::NotArmorPsk)),
                401,
                "not_armor_psk",
            ),
            (
                psk(P::Parse(armor_psk::ParseError::Malformed("x"))),
                401,
                "malformed_authorization",
            ),
            (
                psk(P::TimestampOutOfWindow { server_time: 1 }),
                401,
                "timestamp_out_of_window",
            ),
            (psk(P::InvalidSignature), 401, "invalid_signature"),
            (psk(P::QueryNotSigned), 401, "query_not_signed"),
            (psk(P::NonceReused), 401, "nonce_reused"),
            (
                psk(P::ReplayStoreUnavailable),
                503,
                "replay_store_unavailable",
            ),
            (Error::InvalidToken, 401, "invalid_token"),
            (Error::InvalidCredentials, 401, "invalid_credentials"),
            (Error::InvalidCode, 400, "invalid_grant"),
            (Error::MfaRequired, 401, "mfa_required"),
            (Error::InvalidMfaCode, 400, "invalid_mfa_code"),
            (Error::ApiKeyNotAllowed, 403, "api_key_not_allowed"),
            (
                Error::PermissionDenied("p".into()),
                403,
                "permission_denied",
            ),
            (Error::InvalidAccountContext, 403, "invalid_account_context"),
            (Error::NotFound("x"), 404, "not_found"),
            (Error::BadRequest("x".into()), 400, "invalid_request"),
            (Error::MalformedTarget("x"), 400, "malformed_request_target"),
            (Error::BodyTooLarge(1), 413, "body_too_large"),
            (Error::Conflict("x".into()), 409, "conflict"),
            (Error::RequestTimeout("x"), 408, "request_timeout"),
            (Error::MethodNotAllowed("x"), 405, "method_not_allowed"),
            (Error::StoreUnavailable, 503, "store_unavailable"),
            (Error::Internal("x".into()), 500, "internal_error"),
            (Error::RateLimited { retry_after: 2 }, 429, "rate_limited"),
            (Error::KeyExpired, 401, "key_expired"),
            (Error::IpNotAllowed, 403, "ip_not_allowed"),
            (Error::RouteNotAllowed, 403, "route_not_allowed"),
            (
                Error::KeyRateLimited { limit: 5, reset: 7 },
                429,
                "rate_limited",
            ),
            (
                Error::UpstreamUnavailable("x".into()),
                502,
                "upstream_unavailable",
            ),
            (Error::UpstreamTimeout(1), 504, "upstream_timeout"),
        ];
        for (e, status, code) in cases {
            let (s, c, _) = classify(&e);
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
        }
    }

    #[tokio::test]
    async fn body_shape_and_www_authenticate() {
        let resp = ApiError(Error::Psk {
            err: armor_psk::Error::TimestampOutOfWindow { server_time: 42 },
            detail: None,
        })
        .into_response();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "ARMOR-PSK");
        assert_eq!(
            resp.extensions().get::<ErrorCode>(),
            Some(&ErrorCode("timestamp_out_of_window"))
        );
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "timestamp_out_of_window");
        assert_eq!(v["status"], 401);
        assert_eq!(v["serverTime"], 42);
        assert!(v["Message"].is_string() && v["error_description"].is_string());
    }

    #[tokio::test]
    async fn rate_limited_and_gateway_failures() {
        let resp = ApiError(Error::RateLimited { retry_after: 3 }).into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let resp = ApiError(Error::KeyRateLimited { limit: 5, reset: 7 }).into_response();
        assert_eq!(resp.status(), 429);
        for (name, value) in [
            ("retry-after", "7"),
            ("ratelimit-limit", "5"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "7"),
        ] {
            assert_eq!(resp.headers()[name], value, "{name}");
        }
        for (e, status, code) in [
            (
                Error::UpstreamUnavailable("down".into()),
                502,
                "upstream_unavailable",
            ),
            (Error::UpstreamTimeout(1), 504, "upstream_timeout"),
        ] {
            let resp = ApiError(e).into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["error"], code);
            assert_eq!(v["status"], status);
            assert!(v["title"].is_string() && v["detail"].is_string() && v["type"].is_string());
        }
    }
}
