//! The JSON bodies of the API, as the component schemas of `/openapi.json`.
//!
//! Written here, next to the route table, rather than derived from the
//! handlers' types: most answers are built field by field in the handlers
//! (several shapes per type, aliases on the way in, form bodies read like
//! JSON), so a derive would describe the Rust types, not the wire. Each
//! answer schema is closed (`additionalProperties: false`), so a field a
//! handler adds without documenting it here fails the schema run
//! (`tests/schema/run.sh`, schemathesis with `--checks all`).

use serde_json::{json, Map, Value};

/// Names of the component schemas, as the route table refers to them.
pub mod name {
    pub const ERROR: &str = "Error";
    pub const HEALTH: &str = "Health";
    pub const PONG: &str = "Pong";
    pub const OPENAPI: &str = "OpenApi";
    pub const AUTHORIZE_REQUEST: &str = "AuthorizeRequest";
    pub const AUTHORIZE_RESPONSE: &str = "AuthorizeResponse";
    pub const TOKEN_REQUEST: &str = "TokenRequest";
    pub const REISSUE_REQUEST: &str = "ReissueRequest";
    pub const TOKEN: &str = "Token";
    pub const DONE: &str = "Done";
    pub const WHOAMI: &str = "WhoAmI";
    pub const ME: &str = "Me";
    pub const PERMISSIONS: &str = "Permissions";
    pub const ACCOUNT: &str = "Account";
    pub const ACCOUNTS: &str = "Accounts";
    pub const USER: &str = "User";
    pub const USERS: &str = "Users";
    pub const USER_REQUEST: &str = "UserRequest";
    pub const NEW_USER_REQUEST: &str = "NewUserRequest";
    pub const API_KEY: &str = "ApiKey";
    pub const API_KEYS: &str = "ApiKeys";
    pub const CREATE_KEY_REQUEST: &str = "CreateKeyRequest";
    pub const NEW_API_KEY: &str = "NewApiKey";
    pub const KEY_USAGE: &str = "KeyUsage";
    pub const USAGE_BUCKET: &str = "UsageBucket";
    pub const RENAME_KEY_REQUEST: &str = "RenameKeyRequest";
    pub const ROLL_KEY_REQUEST: &str = "RollKeyRequest";
    pub const ACTIVATION_CODE: &str = "ActivationCode";
    pub const RESET_REQUEST: &str = "ResetPasswordRequest";
    pub const RESET_RESPONSE: &str = "ResetPasswordResponse";
    pub const SET_PASSWORD_REQUEST: &str = "SetPasswordRequest";
    pub const STATUS_REQUEST: &str = "UserStatusRequest";
    pub const STATUS_RESPONSE: &str = "UserStatus";
    pub const LOCK_STATE: &str = "LockState";
    pub const UNLOCKED: &str = "Unlocked";
    pub const SOFT_DELETE_REQUEST: &str = "SoftDeleteRequest";
    pub const CHALLENGE_REQUEST: &str = "ChallengePhraseRequest";
    pub const CHALLENGE_RESPONSE: &str = "ChallengePhrase";
    pub const INFO_REQUEST: &str = "SecurityInformationRequest";
    pub const INFO: &str = "SecurityInformation";
    pub const USER_SECURITY_REQUEST: &str = "UserSecurityRequest";
    pub const USER_SECURITY: &str = "UserSecurity";
    pub const PHONE_REQUEST: &str = "MfaPhoneRequest";
    pub const PHONE_RESPONSE: &str = "MfaPhoneResponse";
    pub const APP_PIN_REQUEST: &str = "AppPinRequest";
    pub const APP_PIN_RESPONSE: &str = "AppPinResponse";
    pub const AUDIT_ENTRIES: &str = "AuditEntries";
    pub const AUDIT_ENTRY: &str = "AuditEntry";
}

/// `{"$ref": "#/components/schemas/<name>"}`.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A closed object: every property listed, `required` ones always there.
fn closed(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// A request object: unknown fields are ignored, as the vendor's were, and
/// an optional field may be `null` (the same as absent).
fn request(required: &[&str], mut properties: Value) -> Value {
    if let Some(props) = properties.as_object_mut() {
        for (name, schema) in props.iter_mut() {
            if !required.contains(&name.as_str()) {
                *schema = json!({"anyOf": [schema.take(), {"type": "null"}]});
            }
        }
    }
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
    })
}

const STRING: &str = "string";

fn s() -> Value {
    json!({ "type": STRING })
}
fn s_or_null() -> Value {
    json!({ "type": [STRING, "null"] })
}
fn int() -> Value {
    json!({ "type": "integer" })
}
fn int_or_null() -> Value {
    json!({ "type": ["integer", "null"] })
}
fn boolean() -> Value {
    json!({ "type": "boolean" })
}
fn date() -> Value {
    json!({ "type": STRING, "format": "date-time" })
}
fn date_or_null() -> Value {
    json!({ "type": [STRING, "null"], "format": "date-time" })
}
/// Text the server trims: something besides white space, no control
/// characters, at most `max` characters.
fn text(max: usize) -> Value {
    json!({ "type": STRING, "maxLength": max, "pattern": TEXT })
}
/// Optional text: may be empty or white space.
fn text_or_empty(max: usize) -> Value {
    json!({ "type": STRING, "maxLength": max, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" })
}
const TEXT: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// The built-in roles.
const ROLES: [&str; 3] = ["Account Owner", "User", "Read Only"];
fn email() -> Value {
    json!({ "type": STRING, "format": "email", "maxLength": 254 })
}
fn list_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}
fn strings() -> Value {
    json!({ "type": "array", "items": { "type": STRING } })
}

/// Every component schema, by name.
pub fn components() -> Map<String, Value> {
    use name::*;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put(
        ERROR,
        json!({
            "type": "object",
            "required": ["error", "error_description", "Message", "status"],
            "properties": {
                "error": {"type": STRING, "description": "stable machine-readable code"},
                "error_description": s(),
                "Message": s(),
                "status": int(),
                "serverTime": {"type": "integer", "description": "the server's clock, on timestamp_out_of_window"}
            },
            "additionalProperties": false,
        }),
    );
    put(
        HEALTH,
        closed(&["status"], json!({"status": {"const": "ok"}})),
    );
    put(PONG, closed(&["pong"], json!({"pong": {"const": true}})));
    put(
        OPENAPI,
        json!({"type": "object", "required": ["openapi", "paths"]}),
    );
    put(
        AUTHORIZE_REQUEST,
        request(
            &["username", "password"],
            json!({"username": s(), "password": s(), "mfaCode": s()}),
        ),
    );
    put(
        AUTHORIZE_RESPONSE,
        closed(
            &["code", "expiresIn", "success", "redirect_uri"],
            json!({
                "code": {"type": STRING, "description": "single-use, for /auth/token"},
                "expiresIn": int(),
                "success": {"const": true},
                "redirect_uri": {"type": "null"},
            }),
        ),
    );
    put(
        TOKEN_REQUEST,
        request(
            &["code"],
            json!({"code": s(), "grant_type": {"const": "authorization_code"}}),
        ),
    );
    put(REISSUE_REQUEST, request(&["token"], json!({"token": s()})));
    put(
        TOKEN,
        closed(
            &["access_token", "id_token", "token_type", "expires_in"],
            json!({
                "access_token": s(),
                "id_token": s(),
                "token_type": {"const": "FH-AUTH"},
                "expires_in": {"type": "integer", "description": "idle expiry, seconds"},
            }),
        ),
    );
    put(
        DONE,
        json!({"const": true, "description": "the action was done"}),
    );
    put(
        WHOAMI,
        closed(
            &[
                "userId",
                "accountId",
                "credential",
                "keyId",
                "method",
                "bodyLength",
                "bodySha256",
            ],
            json!({
                "userId": int(),
                "accountId": int(),
                "credential": {"enum": ["ARMOR-PSK", "FH-AUTH"]},
                "keyId": s_or_null(),
                "method": s(),
                "bodyLength": {"type": "integer", "minimum": 0},
                "bodySha256": {"type": STRING, "pattern": "^[0-9a-f]{64}$"},
            }),
        ),
    );
    put(
        ME,
        closed(
            &[
                "user",
                "accounts",
                "permissions",
                "features",
                "accountContext",
                "authentication",
            ],
            json!({
                "user": closed(
                    &["type", "id", "username", "firstName", "lastName", "links"],
                    json!({
                        "type": {"const": "user"},
                        "id": int(),
                        "username": s(),
                        "firstName": s(),
                        "lastName": s(),
                        "links": closed(&["userId"], json!({"userId": int()})),
                    }),
                ),
                "accounts": list_of(ACCOUNT),
                "permissions": {
                    "type": "object",
                    "description": "permission names per account id",
                    "additionalProperties": strings(),
                },
                "features": {"type": "array", "maxItems": 0},
                "accountContext": int(),
                "authentication": {"enum": ["ARMOR-PSK", "FH-AUTH"]},
            }),
        ),
    );
    put(
        PERMISSIONS,
        closed(
            &["accountId", "permissions", "available"],
            json!({"accountId": int(), "permissions": strings(), "available": strings()}),
        ),
    );
    put(
        ACCOUNT,
        closed(
            &["id", "name", "status", "parent", "type"],
            json!({
                "id": int(),
                "name": s(),
                "status": s(),
                "parent": int_or_null(),
                "type": {"const": "account"},
            }),
        ),
    );
    put(ACCOUNTS, list_of(ACCOUNT));
    put(
        USER,
        closed(
            &[
                "id",
                "email",
                "username",
                "firstName",
                "lastName",
                "status",
                "role",
                "createdDate",
            ],
            json!({
                "id": int(),
                "email": s(),
                "username": s(),
                "firstName": s(),
                "lastName": s(),
                "status": s(),
                "role": s(),
                "createdDate": date(),
            }),
        ),
    );
    put(USERS, list_of(USER));
    let user_fields = json!({
        "email": email(),
        "firstName": text_or_empty(100),
        "lastName": text_or_empty(100),
        "role": {"enum": ROLES},
        "roles": {
            "description": "one role, or a list of one (the vendor's shape)",
            "oneOf": [{"enum": ROLES}, {"type": "array", "items": {"enum": ROLES}, "maxItems": 1}],
        },
    });
    // Not both (400: one role per account).
    let one_role = json!({
        "required": ["role", "roles"],
        "properties": {"role": {"not": {"type": "null"}}, "roles": {"not": {"type": "null"}}},
    });
    let mut new_user = request(&["email"], user_fields.clone());
    new_user["not"] = one_role.clone();
    put(NEW_USER_REQUEST, new_user);
    let mut edit = request(&[], user_fields);
    edit["not"] = one_role;
    put(USER_REQUEST, edit);
    // A key's restrictions and status, in every representation of a key.
    let rules = json!({
        "expiresAt": {"type": [STRING, "null"], "format": "date-time",
            "description": "when the key stops working (its expiry, or the end of its grace period once rolled); null: never"},
        "permissions": {"type": ["array", "null"], "items": s(),
            "description": "the permissions the key may use (its user's still apply); null: all of its user's"},
        "allowedRoutes": {"type": ["array", "null"], "items": s(),
            "description": "\"METHOD /path\" or \"METHOD /prefix/*\" (METHOD may be *); null: any"},
        "allowedIps": {"type": ["array", "null"], "items": s(),
            "description": "CIDRs the request's peer address must be in; null: any"},
        "rateLimit": {"anyOf": [closed(&["limit", "windowSeconds"],
            json!({"limit": int(), "windowSeconds": int()})), {"type": "null"}]},
        "keyStatus": {"type": STRING, "enum": ["Active", "Expired", "Rolled"]},
        "rolledFrom": {"type": [STRING, "null"], "description": "the key this one replaced"},
    });
    let rule_names = [
        "expiresAt",
        "permissions",
        "allowedRoutes",
        "allowedIps",
        "rateLimit",
        "keyStatus",
        "rolledFrom",
    ];
    let with_rules = |base: &[&str], props: Value| {
        let mut props = props;
        if let (Some(p), Some(r)) = (props.as_object_mut(), rules.as_object()) {
            p.extend(r.clone());
        }
        let required: Vec<&str> = base.iter().chain(rule_names.iter()).copied().collect();
        closed(&required, props)
    };
    put(
        API_KEY,
        with_rules(
            &["id", "name", "userId", "createdDate", "lastUsed"],
            json!({
                "id": s(),
                "name": s(),
                "userId": int(),
                "createdDate": date(),
                "lastUsed": date_or_null(),
            }),
        ),
    );
    put(API_KEYS, list_of(API_KEY));
    put(
        USAGE_BUCKET,
        closed(
            &["start", "accepted", "refused"],
            json!({
                "start": date(),
                "accepted": int(),
                "refused": {
                    "type": "object",
                    "description": "refused requests by error code (invalid_signature, nonce_reused, ...)",
                    "additionalProperties": int(),
                },
            }),
        ),
    );
    put(
        KEY_USAGE,
        closed(
            &["keyId", "bucket", "buckets"],
            json!({
                "keyId": s(),
                "bucket": {"type": STRING, "enum": ["minute", "hour", "day"]},
                "buckets": list_of(USAGE_BUCKET),
            }),
        ),
    );
    put(
        CREATE_KEY_REQUEST,
        request(
            &["name"],
            json!({
                "name": text(100),
                "userId": {"type": "integer", "description": "if given, the user of the path"},
                "expiresAt": {"type": STRING, "format": "date-time",
                    "description": "RFC 3339; 60 s to 10 years from now (not with expiresIn)"},
                "expiresIn": {"type": "integer", "minimum": 60, "maximum": crate::core::keyspec::MAX_LIFETIME,
                    "description": "seconds from now (not with expiresAt)"},
                "permissions": {"type": "array", "items": s(),
                    "description": "each held by the key's user now"},
                "allowedRoutes": {"type": "array", "items": s(), "minItems": 1, "maxItems": 100},
                "allowedIps": {"type": "array", "items": s(), "minItems": 1, "maxItems": 100},
                "rateLimit": {"type": "object", "required": ["limit", "windowSeconds"],
                    "properties": {
                        "limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                        "windowSeconds": {"type": "integer", "minimum": 1, "maximum": 86_400},
                    }},
            }),
        ),
    );
    put(
        ROLL_KEY_REQUEST,
        request(
            &[],
            json!({"graceSeconds": {"type": "integer", "minimum": 0, "maximum": 604_800,
                "description": "how long the old key keeps working; default 86400"}}),
        ),
    );
    put(
        NEW_API_KEY,
        with_rules(
            &["id", "apiKey", "name", "userId", "createdDate"],
            json!({
                "id": s(),
                "apiKey": {"type": STRING, "description": "the secret: shown this once"},
                "name": s(),
                "userId": int(),
                "createdDate": date(),
            }),
        ),
    );
    put(
        RENAME_KEY_REQUEST,
        request(
            &["apiKeyId", "newApiKeyName"],
            json!({"apiKeyId": s(), "prevApiKeyName": s(), "newApiKeyName": text(100)}),
        ),
    );
    put(
        ACTIVATION_CODE,
        closed(
            &["userId", "activationCode", "expiresAt"],
            json!({"userId": int(), "activationCode": s(), "expiresAt": date()}),
        ),
    );
    put(
        RESET_REQUEST,
        request(
            &["email"],
            json!({"email": {"type": STRING, "pattern": "\\S", "description": "any address: the answer is the same"}}),
        ),
    );
    put(
        RESET_RESPONSE,
        closed(&["message"], json!({"message": s()})),
    );
    put(
        SET_PASSWORD_REQUEST,
        request(
            &["code", "password"],
            json!({"code": s(), "password": {"type": STRING, "minLength": 12, "maxLength": 1024}}),
        ),
    );
    put(
        STATUS_REQUEST,
        request(
            &["userId"],
            json!({
                "userId": int(),
                "status": {"type": STRING, "description": "active or disabled (or give enabled)"},
                "enabled": boolean(),
            }),
        ),
    );
    put(
        STATUS_RESPONSE,
        closed(
            &["userId", "status"],
            json!({"userId": int(), "status": s()}),
        ),
    );
    put(
        LOCK_STATE,
        closed(
            &["userId", "lockedOut", "lockedUntil", "failedAttempts"],
            json!({
                "userId": int(),
                "lockedOut": boolean(),
                "lockedUntil": date_or_null(),
                "failedAttempts": int(),
            }),
        ),
    );
    put(
        UNLOCKED,
        closed(
            &["unlocked", "wasLockedOut"],
            json!({"unlocked": {"const": true}, "wasLockedOut": boolean()}),
        ),
    );
    put(
        SOFT_DELETE_REQUEST,
        request(&[], json!({"userId": int(), "email": s()})),
    );
    put(
        CHALLENGE_REQUEST,
        request(
            &["challengePhrase"],
            json!({"userId": {"type": "integer", "description": "another user (Users Manage); default the caller"}, "challengePhrase": text(200)}),
        ),
    );
    put(
        CHALLENGE_RESPONSE,
        closed(
            &["userId", "challengePhrase"],
            json!({"userId": int(), "challengePhrase": s_or_null()}),
        ),
    );
    put(
        INFO_REQUEST,
        request(
            &["value"],
            json!({"value": {"type": STRING, "minLength": 1, "maxLength": 4096, "description": "1 to 4096 bytes of UTF-8"}}),
        ),
    );
    put(
        INFO,
        closed(
            &["referenceKey", "value", "updatedDate"],
            json!({"referenceKey": s(), "value": s(), "updatedDate": date()}),
        ),
    );
    put(
        USER_SECURITY_REQUEST,
        request(&[], json!({"clearSecondFactors": boolean()})),
    );
    put(
        USER_SECURITY,
        closed(
            &[
                "userId",
                "accountId",
                "challengePhraseSet",
                "authenticatorApp",
                "phoneVerified",
                "phoneNumber",
                "referenceKeys",
            ],
            json!({
                "userId": int(),
                "accountId": int(),
                "challengePhraseSet": boolean(),
                "authenticatorApp": boolean(),
                "phoneVerified": boolean(),
                "phoneNumber": s_or_null(),
                "referenceKeys": strings(),
            }),
        ),
    );
    put(
        PHONE_REQUEST,
        request(
            &["phoneNumber"],
            json!({"phoneNumber": {
                "type": STRING,
                "description": "international form: + and 7 to 15 digits; spaces, '-', '(' and ')' are ignored",
                "pattern": "^[ ()-]*\\+(?:[ ()-]*[0-9]){7,15}[ ()-]*$",
            }, "code": {"type": STRING, "description": "absent: send a code; present: verify it"}}),
        ),
    );
    put(
        PHONE_RESPONSE,
        json!({"oneOf": [
            closed(&["codeSent", "expiresAt"], json!({"codeSent": {"const": true}, "expiresAt": date()})),
            closed(&["verified"], json!({"verified": {"const": true}})),
        ]}),
    );
    put(
        APP_PIN_REQUEST,
        request(
            &[],
            json!({"pin": {"type": STRING, "description": "absent: enrol; present: verify"}}),
        ),
    );
    put(
        APP_PIN_RESPONSE,
        json!({"oneOf": [
            closed(&["secret", "otpauthUri", "enabled"], json!({"secret": s(), "otpauthUri": s(), "enabled": {"const": false}})),
            closed(&["valid", "enabled", "newlyEnabled"], json!({"valid": {"const": true}, "enabled": {"const": true}, "newlyEnabled": boolean()})),
        ]}),
    );
    put(
        AUDIT_ENTRY,
        closed(
            &[
                "id",
                "at",
                "atDate",
                "accountId",
                "actorId",
                "credential",
                "event",
                "target",
                "address",
                "detail",
            ],
            json!({
                "id": int(),
                "at": {"type": "integer", "description": "Unix seconds"},
                "atDate": date(),
                "accountId": int_or_null(),
                "actorId": int_or_null(),
                "credential": s(),
                "event": s(),
                "target": s_or_null(),
                "address": s_or_null(),
                "detail": s_or_null(),
            }),
        ),
    );
    put(AUDIT_ENTRIES, list_of(AUDIT_ENTRY));
    m
}
