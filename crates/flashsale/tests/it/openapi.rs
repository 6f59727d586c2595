//! The OpenAPI document at `/api/openapi.json`: served as OpenAPI 3 JSON, complete (every route
//! the router answers is documented, with its methods, and nothing else is) and true (real
//! answers have exactly the keys, enum values and formats their documented schemas promise).

use crate::support::{ADMIN_TOKEN, TestApp, error_code, read};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).expect("the document is valid JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_served_as_openapi_3() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi: {version:?}");
    assert_eq!(doc["info"]["title"], "flashsale");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for scheme in ["admin_token", "buyer_jwt"] {
        assert_eq!(
            doc["components"]["securitySchemes"][scheme]["scheme"],
            "bearer"
        );
    }
    // The buy route says what it needs.
    let buy = &doc["paths"]["/api/sales/{id}/buy/{token}"]["post"];
    let idempotency_key = buy["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("Idempotency-Key is documented");
    assert_eq!(
        (&idempotency_key["in"], &idempotency_key["required"]),
        (&json!("header"), &json!(true))
    );
    assert!(buy["responses"]["503"]["headers"]["Retry-After"].is_object());
}

// ----- completeness -----

/// Methods tried on every path (HEAD comes with GET in axum and is left out).
const PROBED_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Every path the HTTP crate registers, read from its `.route("...")` calls. Paths must be
/// string literals, and routers are not nested or merged, so this finds them all.
fn registered_paths() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../http/src");
    let mut files = vec![src];
    let mut paths = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for call in [".nest(", ".nest_service(", ".merge("] {
            assert!(
                !text.contains(call),
                "{}: `{call}` hides routes from the OpenAPI completeness test; teach it to \
                 follow them",
                path.display()
            );
        }
        for call in [".route(", ".route_service("] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                let literal = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split_once('"'))
                    .map(|(literal, _)| literal)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: a route path that is not a string literal; the OpenAPI \
                             completeness test reads them from `{call}\"...\"`",
                            path.display()
                        )
                    });
                paths.insert(literal.to_owned());
            }
        }
    }
    assert!(paths.contains("/api/openapi.json"), "found {paths:?}");
    paths
}

/// `(METHOD, path)` for every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if PROBED_METHODS.contains(&method.as_str()) || method == "HEAD" {
                operations.insert((method, path.clone()));
            }
        }
    }
    operations
}

/// A concrete URL path for a route template: ids become a well-formed UUID nobody has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{id}" => "01900000-0000-7000-8000-000000000000",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The methods the running router answers on `template`: anything but 405. A path the router
/// does not know answers 404 to every method and so has none.
async fn served_methods(app: &TestApp, template: &str) -> BTreeSet<String> {
    let mut answers = Vec::new();
    for method in PROBED_METHODS {
        let response = app
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&concrete(template)),
            )
            .send()
            .await
            .unwrap();
        answers.push((method, read(response).await));
    }
    if answers.iter().all(|(_, (status, body))| {
        *status == StatusCode::NOT_FOUND && error_code(body) == "not_found"
    }) {
        return BTreeSet::new();
    }
    answers
        .into_iter()
        .filter(|(_, (status, _))| *status != StatusCode::METHOD_NOT_ALLOWED)
        .map(|(method, _)| method.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_nothing_else() {
    // The test app runs with the development login, so every conditional route exists.
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let documented = documented_operations(&doc);
    let mut paths = registered_paths();
    paths.extend(documented.iter().map(|(_, path)| path.clone()));
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in served_methods(&app, path).await {
            served.insert((method, path.clone()));
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the OpenAPI document (add #[utoipa::path] and list it in \
         crates/http/src/openapi.rs): {undocumented:?}; documented but not served: {unserved:?}"
    );
    assert!(served.len() >= 18, "{served:?}");
}

// ----- real answers match their schemas -----

/// The schema the document gives for `status` from `method path` (JSON bodies only).
fn response_schema<'d>(doc: &'d Value, method: &str, path: &str, status: StatusCode) -> &'d Value {
    let response = &doc["paths"][path][method]["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} has no JSON schema"
    );
    schema
}

fn resolve<'d>(doc: &'d Value, schema: &'d Value) -> &'d Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "no schema named {name}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn has_type(schema: &Value, name: &str) -> bool {
    match &schema["type"] {
        Value::String(t) => t == name,
        Value::Array(types) => types.iter().any(|t| t == name),
        _ => false,
    }
}

/// Checks `value` against `schema` as far as this API uses JSON Schema: `$ref`, `allOf`
/// (serde's flatten), `oneOf` (nullable references), objects with exactly the documented keys,
/// arrays, enums, primitive types and the uuid and date-time formats.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let errors: Vec<String> = alternatives
            .iter()
            .filter_map(|alt| check(doc, alt, value, at).err())
            .collect();
        return if errors.len() < alternatives.len() {
            Ok(())
        } else {
            Err(errors.join(" / "))
        };
    }
    if let Some(parts) = schema["allOf"].as_array() {
        // Merge the parts' properties: serde's flatten writes them into one object.
        let mut merged = json!({ "type": "object", "properties": {}, "required": [] });
        for part in parts {
            let part = resolve(doc, part);
            assert!(has_type(part, "object"), "{at}: allOf of a non-object");
            for (key, property) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][key] = property.clone();
            }
            for key in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(key.clone());
            }
        }
        return check(doc, &merged, value, at);
    }
    if value.is_null() {
        return if has_type(schema, "null") {
            Ok(())
        } else {
            Err(format!("{at}: null where the schema does not allow it"))
        };
    }
    if has_type(schema, "object") {
        let object = value
            .as_object()
            .ok_or_else(|| format!("{at}: expected an object, got {value}"))?;
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let actual: BTreeSet<&String> = object.keys().collect();
        let documented: BTreeSet<&String> = properties.keys().collect();
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let extra: Vec<_> = actual.difference(&documented).collect();
        if !extra.is_empty() {
            return Err(format!("{at}: keys not in the schema: {extra:?}"));
        }
        let missing: Vec<_> = required
            .iter()
            .filter(|key| !object.contains_key(**key))
            .collect();
        if !missing.is_empty() {
            return Err(format!("{at}: required keys missing: {missing:?}"));
        }
        for (key, item) in object {
            check(doc, &properties[key], item, &format!("{at}.{key}"))?;
        }
        return Ok(());
    }
    if has_type(schema, "array") {
        let items = value
            .as_array()
            .ok_or_else(|| format!("{at}: expected an array, got {value}"))?;
        for (i, item) in items.iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
        return Ok(());
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if has_type(schema, "string") {
        let text = value
            .as_str()
            .ok_or_else(|| format!("{at}: expected a string, got {value}"))?;
        match schema["format"].as_str() {
            Some("uuid") if uuid::Uuid::try_parse(text).is_err() => {
                return Err(format!("{at}: {text:?} is not a UUID"));
            }
            Some("date-time")
                if time::OffsetDateTime::parse(
                    text,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_err() =>
            {
                return Err(format!("{at}: {text:?} is not an RFC 3339 time"));
            }
            _ => {}
        }
        return Ok(());
    }
    if has_type(schema, "integer") {
        return match value.as_i64().or(value.as_u64().map(|_| 0)) {
            Some(_) => Ok(()),
            None => Err(format!("{at}: expected an integer, got {value}")),
        };
    }
    if has_type(schema, "boolean") && !value.is_boolean() {
        return Err(format!("{at}: expected a boolean, got {value}"));
    }
    if has_type(schema, "number") && !value.is_number() {
        return Err(format!("{at}: expected a number, got {value}"));
    }
    Ok(())
}

/// Asserts that a real answer matches what the document says `method path` answers with
/// `status`, and that an error's code is among those its description lists.
fn assert_documented(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let schema = response_schema(doc, method, path, status);
    if let Err(why) = check(doc, schema, body, "body") {
        panic!("{method} {path} {status}: {why}\n{body:#}");
    }
    if !status.is_success() {
        let description = doc["paths"][path][method]["responses"][status.as_str()]["description"]
            .as_str()
            .unwrap_or_default();
        let code = error_code(body);
        assert!(
            description.contains(&format!("`{code}`")),
            "{method} {path} {status}: code `{code}` is not listed in {description:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_documented_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;

    // Admin: create (201), read, list, start.
    let starts_at = app.clock_now() + time::Duration::hours(1);
    let (status, created) = app
        .admin(
            Method::POST,
            "/api/admin/sales",
            Some(json!({
                "name": "Schema phone",
                "price_cents": 9900,
                "stock": 5,
                "starts_at": crate::support::rfc3339(starts_at),
                "ends_at": crate::support::rfc3339(starts_at + time::Duration::hours(1)),
                "per_buyer_limit": 1,
                "payment_window_secs": 600,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_documented(&doc, "post", "/api/admin/sales", status, &created);
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, upcoming) = read(
        app.http
            .get(app.url(&format!("/api/sales/{id}/status")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(upcoming["phase"], "upcoming");
    assert_documented(&doc, "get", "/api/sales/{id}/status", status, &upcoming);

    let (status, body) = app
        .admin(Method::GET, &format!("/api/admin/sales/{id}"), None)
        .await;
    assert_documented(&doc, "get", "/api/admin/sales/{id}", status, &body);
    let (status, body) = app.admin(Method::GET, "/api/admin/sales", None).await;
    assert_documented(&doc, "get", "/api/admin/sales", status, &body);
    let (status, body) = app
        .admin(Method::POST, &format!("/api/admin/sales/{id}/start"), None)
        .await;
    assert_documented(&doc, "post", "/api/admin/sales/{id}/start", status, &body);

    // Buyers: live status with a buy path, buy (202), the order, a refused second buy.
    let live = app.status(&id).await;
    assert_documented(&doc, "get", "/api/sales/{id}/status", StatusCode::OK, &live);
    let buy_path = live["buy_path"].as_str().unwrap();
    let alice = app.buyer("alice");
    let (status, accepted) = app.buy(buy_path, &alice, "key-1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_documented(
        &doc,
        "post",
        "/api/sales/{id}/buy/{token}",
        status,
        &accepted,
    );
    let order_id = accepted["order_id"].as_str().unwrap();
    let (status, order) = app.order(&alice, order_id).await;
    assert_documented(&doc, "get", "/api/orders/{id}", status, &order);
    app.wait_written(&alice, order_id).await;
    let stale = format!("/api/sales/{id}/buy/not-the-token");
    let (status, body) = app.buy(&stale, &app.buyer("bob"), "key-1").await;
    assert_eq!(error_code(&body), "not_found", "{body}");
    assert_documented(&doc, "post", "/api/sales/{id}/buy/{token}", status, &body);
    let (status, body) = read(
        app.http
            .post(app.url(buy_path))
            .bearer_auth(app.buyer("bob"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error_code(&body), "invalid_request", "{body}");
    assert_documented(&doc, "post", "/api/sales/{id}/buy/{token}", status, &body);
    let (status, paid) = app.pay(&alice, order_id, "payment-1").await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_documented(&doc, "post", "/api/orders/{id}/pay", status, &paid);

    let (status, body) = app
        .admin(Method::GET, &format!("/api/admin/sales/{id}/orders"), None)
        .await;
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_documented(&doc, "get", "/api/admin/sales/{id}/orders", status, &body);
    let (status, body) = app.admin(Method::GET, "/api/admin/writers", None).await;
    assert_documented(&doc, "get", "/api/admin/writers", status, &body);

    // Operations and the development login.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = read(app.http.get(app.url(path)).send().await.unwrap()).await;
        assert_documented(&doc, "get", path, status, &body);
    }
    let (status, body) = read(
        app.http
            .post(app.url("/api/dev/buyer-token"))
            .json(&json!({ "buyer_id": "bob" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_documented(&doc, "post", "/api/dev/buyer-token", status, &body);

    // Errors share one body.
    let nobody = "01900000-0000-7000-8000-000000000000";
    let (status, body) = read(
        app.http
            .get(app.url(&format!("/api/sales/{nobody}/status")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_documented(&doc, "get", "/api/sales/{id}/status", status, &body);
    let (status, body) = read(
        app.http
            .get(app.url("/api/admin/sales"))
            .bearer_auth(format!("{ADMIN_TOKEN}-wrong"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_documented(&doc, "get", "/api/admin/sales", status, &body);
    let (status, body) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/sales/{id}"),
            Some(json!({ "stock": 9 })),
        )
        .await;
    assert_eq!(error_code(&body), "sale_not_editable", "{body}");
    assert_documented(&doc, "patch", "/api/admin/sales/{id}", status, &body);
}

// ----- the document states what the server enforces -----

/// Strings each pattern the document states allows and refuses; every one is sent to the
/// server. A new or changed pattern fails here until it has samples.
fn pattern_samples(pattern: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    if pattern == flashsale_core::sale::SALE_NAME_PATTERN {
        (
            vec!["Phone", " a ", "\u{3000}x", "\u{feff}"],
            vec![
                " ",
                "\u{3000}\u{2028}\u{a0}",
                "\t",
                "a\u{0}b",
                "a\u{7f}",
                "a\u{9f}b",
            ],
        )
    } else if pattern == flashsale_core::ids::ID_TEXT_PATTERN {
        (vec!["a-1", "!~"], vec!["a b", "é", "a\u{7f}", "a\tb"])
    } else {
        panic!("no samples for the documented pattern {pattern:?}; add some here")
    }
}

/// One value to send for a field, and whether the document allows it.
struct Probe {
    what: String,
    value: Value,
    allowed: bool,
}

/// Values just inside and just outside each bound `schema` states (`minimum`, `maximum`,
/// `minLength`, `maxLength`, `pattern`). Integers are also sent as whole-number floats
/// (integers to JSON Schema) and with a fraction (not integers).
fn probes(doc: &Value, schema: &Value) -> Vec<Probe> {
    let schema = resolve(doc, schema);
    let mut probes = Vec::new();
    let mut add = |what: String, value: Value, allowed: bool| {
        probes.push(Probe {
            what,
            value,
            allowed,
        })
    };
    if has_type(schema, "integer") {
        let bound = |key: &str| schema[key].as_f64().map(|v| v as i64);
        if let Some(min) = bound("minimum") {
            add(format!("minimum {min}"), json!(min), true);
            add(format!("minimum {min} as a float"), json!(min as f64), true);
            add(format!("below minimum {min}"), json!(min - 1), false);
            add(
                format!("minimum {min} and a half"),
                json!(min as f64 + 0.5),
                false,
            );
        }
        if let Some(max) = bound("maximum") {
            add(format!("maximum {max}"), json!(max), true);
            add(format!("maximum {max} as a float"), json!(max as f64), true);
            add(format!("above maximum {max}"), json!(max + 1), false);
            add(
                format!("half below maximum {max}"),
                json!(max as f64 - 0.5),
                false,
            );
        }
    }
    if has_type(schema, "string") {
        // "a" matches every pattern here, so only the length is off.
        let text = |len: u64| json!("a".repeat(len as usize));
        if let Some(min) = schema["minLength"].as_u64() {
            add(format!("minLength {min}"), text(min), true);
            if min > 0 {
                add(
                    format!("shorter than minLength {min}"),
                    text(min - 1),
                    false,
                );
            }
        }
        if let Some(max) = schema["maxLength"].as_u64() {
            add(format!("maxLength {max}"), text(max), true);
            add(format!("longer than maxLength {max}"), text(max + 1), false);
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            let (allowed, refused) = pattern_samples(pattern);
            for sample in allowed {
                add(
                    format!("{sample:?}, which the pattern allows"),
                    json!(sample),
                    true,
                );
            }
            for sample in refused {
                add(
                    format!("{sample:?}, which the pattern refuses"),
                    json!(sample),
                    false,
                );
            }
        }
    }
    probes
}

/// Judges one answer: an allowed value is not refused as invalid (other answers, such as a
/// 404 for an order nobody has, are fine), a refused one gets 400 `invalid_request`.
fn judge(probe: &Probe, at: &str, status: StatusCode, body: &Value, failures: &mut Vec<String>) {
    let refused = status == StatusCode::BAD_REQUEST && error_code(body) == "invalid_request";
    if probe.allowed && status == StatusCode::BAD_REQUEST {
        failures.push(format!(
            "{at} = {}: the document allows it, the server refused it: {body}",
            probe.what
        ));
    }
    if !probe.allowed && !refused {
        failures.push(format!(
            "{at} = {}: the document refuses it, the server answered {status} {body}",
            probe.what
        ));
    }
}

/// Issue 13, part 9: for every bound the document states on a request body field, a header or
/// a query parameter, a value just inside is not refused and one just outside is refused with
/// 400, so the document and the server cannot drift apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_what_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let upcoming = app.create_sale(5, 1, time::Duration::hours(1)).await;
    let (live, buy_path) = app.live_sale(100, 1).await;
    let owner = app.buyer("owner");
    let (_, writers) = app.admin(Method::GET, "/api/admin/writers", None).await;
    let starts_at = app.clock_now() + time::Duration::hours(1);
    let nobody = "01900000-0000-7000-8000-000000000000";
    let (status, lined) = app
        .admin(
            Method::POST,
            "/api/admin/sales",
            Some(json!({
                "name": "Lined", "price_cents": 100, "stock": 3,
                "starts_at": crate::support::rfc3339(starts_at),
                "ends_at": crate::support::rfc3339(starts_at + time::Duration::hours(1)),
                "per_buyer_limit": 1, "payment_window_secs": 60,
                "waiting_room": {
                    "opens_at": crate::support::rfc3339(starts_at - time::Duration::minutes(10)),
                    "admit_per_sec": 10, "admission_secs": 60,
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lined}");
    let lined = lined["id"].as_str().unwrap().to_owned();

    // Every operation with a JSON body: where to send it, as whom, and a valid body.
    let bodies: Vec<(&str, &str, String, Option<&str>, Value)> = vec![
        (
            "post",
            "/api/admin/sales",
            "/api/admin/sales".into(),
            Some(ADMIN_TOKEN),
            json!({
                "name": "Bounds", "price_cents": 100, "stock": 3,
                "starts_at": crate::support::rfc3339(starts_at),
                "ends_at": crate::support::rfc3339(starts_at + time::Duration::hours(1)),
                "per_buyer_limit": 1, "payment_window_secs": 60,
            }),
        ),
        (
            "patch",
            "/api/admin/sales/{id}",
            format!("/api/admin/sales/{upcoming}"),
            Some(ADMIN_TOKEN),
            json!({}),
        ),
        (
            "post",
            "/api/orders/{id}/pay",
            format!("/api/orders/{nobody}/pay"),
            Some(owner.as_str()),
            json!({ "payment_id": "p-1" }),
        ),
        (
            "post",
            "/api/dev/buyer-token",
            "/api/dev/buyer-token".into(),
            None,
            json!({ "buyer_id": "bob" }),
        ),
        (
            "put",
            "/api/admin/writers",
            "/api/admin/writers".into(),
            Some(ADMIN_TOKEN),
            writers.clone(),
        ),
        (
            "post",
            "/api/admin/sales/{id}/line",
            format!("/api/admin/sales/{lined}/line"),
            Some(ADMIN_TOKEN),
            json!({ "paused": false, "admit_per_sec": 10 }),
        ),
        (
            "post",
            "/api/sales/{id}/line",
            format!("/api/sales/{lined}/line"),
            Some(owner.as_str()),
            json!({ "challenge": "a".repeat(44), "nonce": "1" }),
        ),
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"].is_object() {
                assert!(
                    bodies.iter().any(|(m, p, ..)| m == method && p == path),
                    "{method} {path} reads a body; give it a valid one here"
                );
            }
        }
    }

    let mut sent = 0;
    let mut failures = Vec::new();
    for (method, template, url, auth, base) in &bodies {
        let schema = resolve(
            &doc,
            &doc["paths"][*template][*method]["requestBody"]["content"]["application/json"]["schema"],
        );
        for (field, property) in schema["properties"].as_object().unwrap() {
            for probe in probes(&doc, property) {
                let mut body = base.clone();
                body[field] = probe.value.clone();
                let mut request = app
                    .http
                    .request(
                        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        app.url(url),
                    )
                    .json(&body);
                if let Some(token) = auth {
                    request = request.bearer_auth(token);
                }
                let (status, answer) = read(request.send().await.unwrap()).await;
                judge(
                    &probe,
                    &format!("{method} {template} {field}"),
                    status,
                    &answer,
                    &mut failures,
                );
                sent += 1;
            }
        }
    }
    // Put the writers back as they were.
    let (status, _) = app
        .admin(Method::PUT, "/api/admin/writers", Some(writers))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Headers and query parameters with bounds.
    let mut buyers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                for probe in probes(&doc, &parameter["schema"]) {
                    // A header or query value is text: floats are JSON's business only.
                    if probe.value.is_f64() {
                        continue;
                    }
                    let text = match &probe.value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    let at = format!("{method} {path} {name}");
                    let request = match (method.as_str(), path.as_str(), name) {
                        ("post", "/api/sales/{id}/buy/{token}", "Idempotency-Key") => {
                            // Not every refused sample can be a header value at all.
                            if reqwest::header::HeaderValue::from_str(&text).is_err() {
                                continue;
                            }
                            buyers += 1;
                            app.http
                                .post(app.url(&buy_path))
                                .bearer_auth(app.buyer(&format!("probe-{buyers}")))
                                .header("Idempotency-Key", text)
                        }
                        ("get", "/api/sales/{id}/line/log", "from" | "limit") => {
                            app.http.get(app.url(&format!(
                                "/api/sales/{lined}/line/log?part=joins&{name}={text}"
                            )))
                        }
                        ("get", "/api/admin/sales/{id}/orders", "limit") => app
                            .http
                            .get(app.url(&format!("/api/admin/sales/{live}/orders?limit={text}")))
                            .bearer_auth(ADMIN_TOKEN),
                        _ => panic!("{at} has bounds; teach this test to send it"),
                    };
                    let (status, answer) = read(request.send().await.unwrap()).await;
                    judge(&probe, &at, status, &answer, &mut failures);
                    sent += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the document and the server disagree:\n{}",
        failures.join("\n")
    );
    assert!(sent >= 80, "only {sent} probes");
    eprintln!("{sent} values on both sides of the document's bounds, all answered as documented");
}
