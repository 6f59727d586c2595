//! Bad input (issue 6, part 5): a corpus of several hundred malformed or hostile requests, sent
//! byte for byte over raw TCP so nothing normalises them on the way. Each must get a clear 4xx
//! (a JSON error body wherever the application answers), none may change any state, and the
//! server must still serve afterwards.

use crate::support::{ADMIN_TOKEN, TestApp, read, rfc3339};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw request and what it is, for the failure message.
struct Case {
    name: String,
    bytes: Vec<u8>,
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one raw request and returns (status, body). The connection is closed by the server
/// after the answer (`Connection: close`), so reading to the end reads the whole answer.
async fn send(addr: &str, bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        // A server may answer and close before reading everything we sent; what it answered
        // is what counts.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(ANSWER_WAIT, exchange)
        .await
        .map_err(|_| format!("no answer within {ANSWER_WAIT:?}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => answer[end + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

/// Longest wait for one answer: well under the request timeout, so a request the server
/// leaves hanging until its timeout shows up as a failure here.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A base64url character other than `c`, so a flip keeps the token's shape.
fn flipped(c: u8) -> u8 {
    match c {
        b'A' => b'B',
        b'.' => b'x',
        _ => b'A',
    }
}

fn flips(token: &str) -> Vec<String> {
    (0..token.len())
        .map(|i| {
            let mut bytes = token.as_bytes().to_vec();
            bytes[i] = flipped(bytes[i]);
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

/// The state a client could change: every sale with its counters (minus the per-layer
/// request counts, which are metrics) and every order of the sale.
async fn snapshot(app: &TestApp, sale: &str) -> Value {
    let (_, mut sales) = app
        .admin(reqwest::Method::GET, "/api/admin/sales", None)
        .await;
    for sale in sales.as_array_mut().unwrap() {
        sale.as_object_mut().unwrap().remove("layers");
    }
    let (_, orders) = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/admin/sales/{sale}/orders?limit=10000"),
            None,
        )
        .await;
    let (_, writers) = app
        .admin(reqwest::Method::GET, "/api/admin/writers", None)
        .await;
    json!({ "sales": sales, "orders": orders, "writers": writers })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_4xx_and_change_nothing() {
    // A short body deadline, so a stalled body is answered well within ANSWER_WAIT.
    let app = TestApp::spawn_with(&[("FLASHSALE_HTTP__BODY_READ_TIMEOUT_MS", "1000")]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let (sale, path) = app.live_sale(5, 1).await;
    // One real order, so order routes have something to protect.
    let owner = app.buyer("owner");
    let (status, body) = app.buy(&path, &owner, "k-owner").await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let order = body["order_id"].as_str().unwrap().to_owned();
    app.wait_written(&owner, &order).await;
    let before = snapshot(&app, &sale).await;

    let admin = format!("Bearer {ADMIN_TOKEN}");
    let json_admin = [
        ("Authorization", admin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: String, bytes: Vec<u8>| cases.push(Case { name, bytes });

    // --- Sale creation: every truncation of a valid body, wrong types, bad values. ---
    let starts = rfc3339(app.clock_now() + time::Duration::hours(1));
    let ends = rfc3339(app.clock_now() + time::Duration::hours(2));
    let valid = json!({
        "name": "Hostile", "price_cents": 100, "stock": 3, "starts_at": starts,
        "ends_at": ends, "per_buyer_limit": 1, "payment_window_secs": 60,
    });
    let valid_text = valid.to_string();
    for end in 0..valid_text.len() {
        add(
            format!("create sale, body truncated to {end} bytes"),
            request(
                "POST",
                "/api/admin/sales",
                &json_admin,
                &valid_text.as_bytes()[..end],
            ),
        );
    }
    let wrong_values: [(&str, Value); 10] = [
        ("a string", json!("text")),
        ("an array", json!([1, 2])),
        ("an object", json!({"a": 1})),
        ("null", Value::Null),
        ("a bool", json!(true)),
        ("negative", json!(-1)),
        ("a fraction", json!(1.5)),
        ("2^64", json!(18_446_744_073_709_551_616_f64)),
        ("zero", json!(0)),
        ("an empty string", json!("")),
    ];
    for field in [
        "name",
        "price_cents",
        "stock",
        "starts_at",
        "ends_at",
        "per_buyer_limit",
        "payment_window_secs",
    ] {
        for (what, value) in &wrong_values {
            // A price of 0 is a valid (free) sale; everything else here is invalid.
            if (field == "price_cents" && *what == "zero")
                || (field == "name" && *what == "a string")
            {
                continue;
            }
            let mut body = valid.clone();
            body[field] = value.clone();
            add(
                format!("create sale, {field} = {what}"),
                request(
                    "POST",
                    "/api/admin/sales",
                    &json_admin,
                    body.to_string().as_bytes(),
                ),
            );
        }
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        add(
            format!("create sale without {field}"),
            request(
                "POST",
                "/api/admin/sales",
                &json_admin,
                body.to_string().as_bytes(),
            ),
        );
    }
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown field", {
            let mut body = valid.clone();
            body["admin"] = json!(true);
            body.to_string().into_bytes()
        }),
        ("ends before it starts", {
            let mut body = valid.clone();
            body["ends_at"] = json!(starts);
            body["starts_at"] = json!(ends);
            body.to_string().into_bytes()
        }),
        (
            "a huge number literal",
            valid_text
                .replace("\"stock\":3", "\"stock\":1e400")
                .into_bytes(),
        ),
        (
            "stock over u32",
            valid_text
                .replace("\"stock\":3", "\"stock\":4294967296")
                .into_bytes(),
        ),
        ("nested 2,000 deep", "[".repeat(2_000).into_bytes()),
        (
            "nested 100,000 deep (over the body limit)",
            "[".repeat(100_000).into_bytes(),
        ),
        ("a 5,000-byte name (over the body limit)", {
            let mut body = valid.clone();
            body["name"] = json!("n".repeat(5_000));
            body.to_string().into_bytes()
        }),
        ("invalid UTF-8 in a string", {
            let mut bytes = br#"{"name":"bad "#.to_vec();
            bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
            bytes.extend_from_slice(
                &valid_text.as_bytes()[valid_text.find(",\"price").unwrap() - 1..],
            );
            bytes
        }),
        (
            "a lone surrogate escape",
            valid_text.replace("Hostile", "\\ud800").into_bytes(),
        ),
        ("a NUL byte", b"{\"name\":\"a\0b\"}".to_vec()),
        ("not JSON at all", b"name=Hostile&stock=3".to_vec()),
        ("a JSON array", b"[]".to_vec()),
        ("a JSON string", b"\"sale\"".to_vec()),
        ("a JSON number", b"42".to_vec()),
        (
            "two objects",
            format!("{valid_text}{valid_text}").into_bytes(),
        ),
        (
            "duplicate keys",
            valid_text.replacen('{', "{\"stock\":1,", 1).into_bytes(),
        ),
    ];
    for (what, body) in bodies.drain(..) {
        add(
            format!("create sale, {what}"),
            request("POST", "/api/admin/sales", &json_admin, &body),
        );
    }
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "json",
    ] {
        add(
            format!("create sale as Content-Type {content_type:?}"),
            request(
                "POST",
                "/api/admin/sales",
                &[
                    ("Authorization", admin.as_str()),
                    ("Content-Type", content_type),
                ],
                valid_text.as_bytes(),
            ),
        );
    }
    // A valid body without the admin token, or with a buyer's.
    let buyer_bearer = format!("Bearer {owner}");
    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic YWRtaW46YWRtaW4="),
        Some(buyer_bearer.as_str()),
        Some("Bearer test-admin-token-012345678"),
    ] {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        add(
            format!("create sale with Authorization {auth:?}"),
            request("POST", "/api/admin/sales", &headers, valid_text.as_bytes()),
        );
    }

    // --- Buying: every single-byte flip of a valid JWT and of the buy-path token. ---
    let flipper = app.buyer("flipper");
    for (i, token) in flips(&flipper).into_iter().enumerate() {
        let bearer = format!("Bearer {token}");
        let key = format!("flip-jwt-{i}");
        add(
            format!("buy with the JWT flipped at byte {i}"),
            request(
                "POST",
                &path,
                &[("Authorization", &bearer), ("Idempotency-Key", &key)],
                b"",
            ),
        );
    }
    let path_token = path.rsplit('/').next().unwrap().to_owned();
    let path_prefix = path[..path.len() - path_token.len()].to_owned();
    let flipper_bearer = format!("Bearer {flipper}");
    for (i, token) in flips(&path_token).into_iter().enumerate() {
        let key = format!("flip-path-{i}");
        add(
            format!("buy with the buy-path token flipped at byte {i}"),
            request(
                "POST",
                &format!("{path_prefix}{token}"),
                &[
                    ("Authorization", &flipper_bearer),
                    ("Idempotency-Key", &key),
                ],
                b"",
            ),
        );
    }
    let expired = app.tokens.issue(
        &flashsale_core::BuyerId::parse("late").unwrap(),
        app.clock_now() - time::Duration::hours(2),
        app.clock_now() - time::Duration::hours(1),
    );
    let expired_bearer = format!("Bearer {expired}");
    let other_secret =
        flashsale_core::tokens::BuyerTokens::new(b"another-shop-secret-0123456789abcdef").issue(
            &flashsale_core::BuyerId::parse("forger").unwrap(),
            app.clock_now(),
            app.clock_now() + time::Duration::hours(1),
        );
    let forged_bearer = format!("Bearer {other_secret}");
    let none_alg =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
    let none_bearer = format!("Bearer {none_alg}");
    let long_key = "k".repeat(300);
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let buy_cases: Vec<(&str, String, Headers)> = vec![
        (
            "an expired JWT",
            path.clone(),
            vec![
                ("Authorization", &expired_bearer),
                ("Idempotency-Key", "e1"),
            ],
        ),
        (
            "a JWT signed with another secret",
            path.clone(),
            vec![("Authorization", &forged_bearer), ("Idempotency-Key", "f1")],
        ),
        (
            "an alg=none JWT",
            path.clone(),
            vec![("Authorization", &none_bearer), ("Idempotency-Key", "n1")],
        ),
        (
            "no Authorization",
            path.clone(),
            vec![("Idempotency-Key", "a1")],
        ),
        (
            "no Idempotency-Key",
            path.clone(),
            vec![("Authorization", &flipper_bearer)],
        ),
        (
            "an empty Idempotency-Key",
            path.clone(),
            vec![("Authorization", &flipper_bearer), ("Idempotency-Key", "")],
        ),
        (
            "a 300-byte Idempotency-Key",
            path.clone(),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", &long_key),
            ],
        ),
        (
            "an Idempotency-Key with spaces",
            path.clone(),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", "a b c"),
            ],
        ),
        (
            "the buy path of a sale id that does not exist",
            format!("/api/sales/{}/buy/{path_token}", uuid::Uuid::nil()),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", "x1"),
            ],
        ),
        (
            "a buy path whose sale id is not a UUID",
            format!("/api/sales/not-a-sale/buy/{path_token}"),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", "x2"),
            ],
        ),
        (
            "an empty buy-path token",
            path_prefix.clone(),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", "x3"),
            ],
        ),
        (
            "a buy-path token of 1,000 characters",
            format!("{path_prefix}{}", "A".repeat(1_000)),
            vec![
                ("Authorization", &flipper_bearer),
                ("Idempotency-Key", "x4"),
            ],
        ),
    ];
    for (what, target, headers) in buy_cases {
        add(
            format!("buy with {what}"),
            request("POST", &target, &headers, b""),
        );
    }

    // --- Orders and payment. ---
    let stranger = app.buyer("stranger");
    let stranger_bearer = format!("Bearer {stranger}");
    let owner_bearer = format!("Bearer {owner}");
    let pay_path = format!("/api/orders/{order}/pay");
    for (what, auth, body) in [
        (
            "another buyer's order",
            stranger_bearer.as_str(),
            r#"{"payment_id":"p-1"}"#.to_owned(),
        ),
        ("an empty body", owner_bearer.as_str(), String::new()),
        ("no payment id", owner_bearer.as_str(), "{}".to_owned()),
        (
            "a numeric payment id",
            owner_bearer.as_str(),
            r#"{"payment_id":5}"#.to_owned(),
        ),
        (
            "an empty payment id",
            owner_bearer.as_str(),
            r#"{"payment_id":""}"#.to_owned(),
        ),
        (
            "a 300-byte payment id",
            owner_bearer.as_str(),
            format!(r#"{{"payment_id":"{}"}}"#, "p".repeat(300)),
        ),
        (
            "an unknown field",
            owner_bearer.as_str(),
            r#"{"payment_id":"p-1","amount":0}"#.to_owned(),
        ),
        (
            "a payment id with control characters",
            owner_bearer.as_str(),
            r#"{"payment_id":"p\u0000\u0007"}"#.to_owned(),
        ),
        (
            "truncated JSON",
            owner_bearer.as_str(),
            r#"{"payment_id":"p-"#.to_owned(),
        ),
    ] {
        add(
            format!("pay with {what}"),
            request(
                "POST",
                &pay_path,
                &[
                    ("Authorization", auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            ),
        );
    }
    for (what, target, auth) in [
        (
            "another buyer's order",
            format!("/api/orders/{order}"),
            stranger_bearer.as_str(),
        ),
        (
            "an order id that is not a UUID",
            "/api/orders/12345".to_owned(),
            owner_bearer.as_str(),
        ),
        (
            "a nil order id",
            format!("/api/orders/{}", uuid::Uuid::nil()),
            owner_bearer.as_str(),
        ),
        (
            "an expired token",
            format!("/api/orders/{order}"),
            expired_bearer.as_str(),
        ),
        (
            "a forged token",
            format!("/api/orders/{order}"),
            forged_bearer.as_str(),
        ),
    ] {
        add(
            format!("get order: {what}"),
            request("GET", &target, &[("Authorization", auth)], b""),
        );
    }

    // --- Wrong methods on every route. ---
    let routes = [
        ("/healthz", "POST"),
        ("/readyz", "DELETE"),
        ("/api/openapi.json", "PUT"),
        (&*format!("/sales/{sale}"), "POST"),
        (&*format!("/api/sales/{sale}/status"), "POST"),
        (&*path, "GET"),
        (&*path, "PUT"),
        (&*format!("/api/orders/{order}"), "DELETE"),
        (&*pay_path, "GET"),
        ("/api/admin/sales", "DELETE"),
        (&*format!("/api/admin/sales/{sale}"), "PUT"),
        (&*format!("/api/admin/sales/{sale}"), "DELETE"),
        (&*format!("/api/admin/sales/{sale}/start"), "GET"),
        (&*format!("/api/admin/sales/{sale}/stop"), "PUT"),
        (&*format!("/api/admin/sales/{sale}/orders"), "POST"),
        ("/api/admin/writers", "POST"),
        ("/api/admin/writers", "DELETE"),
        ("/metrics", "POST"),
    ];
    for (route, method) in routes {
        add(
            format!("{method} {route}"),
            request(method, route, &[("Authorization", admin.as_str())], b""),
        );
    }

    // --- Paths: traversal, odd encodings, unknown places. ---
    for target in [
        "/sales/../../etc/passwd",
        "/sales/..%2f..%2fetc%2fpasswd",
        "/sales/%2e%2e/%2e%2e/etc/passwd",
        "/api/orders/../admin/sales",
        "/api/sales/%00/status",
        "/api/sales/..%5c..%5cwindows/status",
        "//api//admin//sales",
        "/api/admin/sales/%zz",
        "/api/admin/sales/not-a-uuid",
        "/static/../../../../etc/shadow",
        "/.env",
        "/api",
        "/api/",
        "/sales/",
        "/sales/00000000-0000-0000-0000-000000000000",
    ] {
        add(
            format!("GET {target}"),
            request("GET", target, &[("Authorization", admin.as_str())], b""),
        );
    }
    for query in [
        "limit=-1",
        "limit=abc",
        "limit=99999999999",
        "limit=10001",
        "limit=1&limit=2",
        "limit=%FF",
    ] {
        let target = format!("/api/admin/sales/{sale}/orders?{query}");
        add(
            format!("GET recent orders with {query}"),
            request("GET", &target, &[("Authorization", admin.as_str())], b""),
        );
    }
    // Writers: bad counts.
    for body in [
        r#"{"count":-1}"#,
        r#"{"count":100000}"#,
        r#"{"count":"2"}"#,
        r#"{}"#,
        r#"{"count":1.5}"#,
    ] {
        add(
            format!("PUT writers {body}"),
            request("PUT", "/api/admin/writers", &json_admin, body.as_bytes()),
        );
    }
    // Patch: bad edits of a live sale and bad values.
    for body in [
        r#"{"stock":10}"#,
        r#"{"stock":-5}"#,
        r#"{"name":null}"#,
        r#"{"unknown":1}"#,
        r#"[]"#,
    ] {
        add(
            format!("PATCH the live sale with {body}"),
            request(
                "PATCH",
                &format!("/api/admin/sales/{sale}"),
                &json_admin,
                body.as_bytes(),
            ),
        );
    }

    // --- Headers and framing. ---
    let huge = "h".repeat(20_000);
    add(
        "a 20,000-byte header".into(),
        request("GET", "/healthz", &[("X-Huge", &huge)], b""),
    );
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    add(
        "100 headers".into(),
        request("GET", "/healthz", &many_refs, b""),
    );
    add(
        "a 20,000-byte path".into(),
        request("GET", &format!("/sales/{}", "a".repeat(20_000)), &[], b""),
    );
    add(
        "a body longer than its Content-Length says, to a buy".into(),
        {
            let mut bytes = request("POST", &path, &[("Authorization", &flipper_bearer)], b"");
            bytes.extend_from_slice(b"garbage");
            bytes
        },
    );
    add(
        "a Content-Length of 10 GB".into(),
        format!("POST /api/admin/sales HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{").into_bytes(),
    );
    add(
        "a declared body that never comes".into(),
        format!("POST /api/admin/sales HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").into_bytes(),
    );
    add(
        "a negative Content-Length".into(),
        b"POST /api/admin/sales HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: -1\r\n\r\n".to_vec(),
    );
    add(
        "two different Content-Lengths".into(),
        b"POST /api/admin/sales HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
    );
    add(
        "a header with invalid bytes".into(),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Bad: \xff\xfe\x01\r\n\r\n"
            .to_vec(),
    );
    add(
        "a request line with invalid UTF-8".into(),
        b"GET /sales/\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add(
        "an unknown HTTP version".into(),
        b"GET /healthz HTTP/9.9\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add(
        "a method that does not exist".into(),
        b"BREW /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add(
        "a header without a colon".into(),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nNoColonHere\r\n\r\n".to_vec(),
    );
    add(
        "bad chunked framing".into(),
        format!("POST /api/admin/sales HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
    );
    add(
        "the development login with a bad buyer id".into(),
        request(
            "POST",
            "/api/dev/buyer-token",
            &[("Content-Type", "application/json")],
            br#"{"buyer_id":"a b\u0000"}"#,
        ),
    );
    add(
        "the development login with a 1,000-character buyer id".into(),
        request(
            "POST",
            "/api/dev/buyer-token",
            &[("Content-Type", "application/json")],
            format!(r#"{{"buyer_id":"{}"}}"#, "b".repeat(1_000)).as_bytes(),
        ),
    );

    assert!(
        cases.len() >= 300,
        "the corpus has {} requests",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = match send(&addr, &case.bytes).await {
            Ok(answer) => answer,
            Err(why) => {
                failures.push(format!("{}: {why}", case.name));
                continue;
            }
        };
        if !(400..500).contains(&status) {
            failures.push(format!("{}: status {status}", case.name));
            continue;
        }
        // Answers from the application carry the JSON error; hyper's own answers to broken
        // framing (400, 431) have no body, which is allowed.
        if !body.is_empty() {
            let parsed: Result<Value, _> = serde_json::from_slice(&body);
            match parsed {
                Ok(value)
                    if value["error"]["code"].is_string()
                        && value["error"]["message"].is_string() => {}
                _ => failures.push(format!(
                    "{}: status {status} without a JSON error body: {}",
                    case.name,
                    String::from_utf8_lossy(&body)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were not answered with a clear 4xx:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let after = snapshot(&app, &sale).await;
    assert_eq!(before, after, "a hostile request changed state");
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    let (status, _) = read(response).await;
    assert_eq!(status, reqwest::StatusCode::OK, "the server still serves");
    eprintln!(
        "{} hostile requests, all refused with a 4xx, no state changed",
        cases.len()
    );
}
