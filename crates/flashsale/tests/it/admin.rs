//! The admin API: authentication, validation that names the field, edits only before the
//! start, start and stop by hand, the writer count at run time, and errors as JSON.

use crate::support::{ADMIN_TOKEN, TestApp, error_code, rfc3339};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_admin_token() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/api/admin/sales"),
        (Method::POST, "/api/admin/sales"),
        (Method::GET, "/api/admin/writers"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        // A buyer token is not an admin token.
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(app.buyer("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    let (code, body) = app.admin(Method::GET, "/api/admin/sales", None).await;
    assert_eq!((code, body), (StatusCode::OK, json!([])));
    assert!(ADMIN_TOKEN.len() >= 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sales_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let starts = app.clock_now() + time::Duration::hours(1);
    let good = json!({
        "name": "Phone", "price_cents": 100, "stock": 10,
        "starts_at": rfc3339(starts), "ends_at": rfc3339(starts + time::Duration::hours(1)),
        "per_buyer_limit": 1, "payment_window_secs": 60,
    });
    let cases = [
        ("stock", json!(0), "stock"),
        ("per_buyer_limit", json!(0), "per_buyer_limit"),
        (
            "ends_at",
            json!(rfc3339(starts - time::Duration::hours(1))),
            "ends_at",
        ),
        ("name", json!(""), "name"),
        ("stock", json!(-1), "stock"),
        ("stock", json!("ten"), "stock"),
        ("starts_at", json!("tomorrow"), "starts_at"),
        ("surprise", json!(1), "surprise"),
    ];
    for (field, value, named) in cases {
        let mut body = good.clone();
        body[field] = value;
        let (code, answer) = app
            .admin(Method::POST, "/api/admin/sales", Some(body))
            .await;
        assert_eq!(
            (code, error_code(&answer)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{field}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(named),
            "message for {field} should name {named}: {message}"
        );
    }
    // Not JSON at all, or without the JSON content type.
    let response = app
        .http
        .post(app.url("/api/admin/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .http
        .post(app.url("/api/admin/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({ "name": "x".repeat(10_000) });
    let (code, body) = app
        .admin(Method::POST, "/api/admin/sales", Some(huge))
        .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Nothing was created by any of it.
    assert_eq!(
        app.admin(Method::GET, "/api/admin/sales", None).await.1,
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_are_editable_only_before_they_start() {
    let app = TestApp::spawn().await;
    let sale = app.create_sale(10, 1, time::Duration::hours(1)).await;
    let (code, body) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/sales/{sale}"),
            Some(json!({"stock": 20, "name": "Bigger"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["stock"].as_u64(),
            body["name"].as_str(),
            body["version"].as_u64()
        ),
        (Some(20), Some("Bigger"), Some(2))
    );
    assert_eq!(body["counters"]["available"], 20);
    let (code, body) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/sales/{sale}"),
            Some(json!({"per_buyer_limit": 0})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    let (code, body) = app
        .admin(
            Method::POST,
            &format!("/api/admin/sales/{sale}/start"),
            None,
        )
        .await;
    assert_eq!(
        (code, body["phase"].as_str()),
        (StatusCode::OK, Some("live"))
    );
    let (code, body) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/sales/{sale}"),
            Some(json!({"stock": 5})),
        )
        .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::CONFLICT, "sale_not_editable")
    );
    let (code, body) = app
        .admin(
            Method::POST,
            &format!("/api/admin/sales/{sale}/start"),
            None,
        )
        .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::CONFLICT, "sale_not_editable")
    );

    let (code, body) = app
        .admin(Method::POST, &format!("/api/admin/sales/{sale}/stop"), None)
        .await;
    assert_eq!(
        (code, body["phase"].as_str()),
        (StatusCode::OK, Some("ended"))
    );
    assert_eq!(app.status(&sale).await["phase"], "ended");
    let (code, _) = app
        .admin(
            Method::GET,
            "/api/admin/sales/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_count_changes_at_run_time() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.admin(Method::GET, "/api/admin/writers", None).await.1,
        json!({"count": 2})
    );
    assert_eq!(
        app.admin(Method::PUT, "/api/admin/writers", Some(json!({"count": 5})))
            .await
            .1,
        json!({"count": 5})
    );
    assert_eq!(
        app.admin(Method::GET, "/api/admin/writers", None).await.1,
        json!({"count": 5})
    );
    let (code, body) = app
        .admin(
            Method::PUT,
            "/api/admin/writers",
            Some(json!({"count": 65})),
        )
        .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (code, _) = app
        .admin(
            Method::PUT,
            "/api/admin/writers",
            Some(json!({"count": -1})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.admin(Method::PUT, "/api/admin/writers", Some(json!({"count": 1})))
            .await
            .1,
        json!({"count": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = TestApp::spawn().await;
    let (code, body) =
        crate::support::read(app.http.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (code, body) = crate::support::read(
        app.http
            .delete(app.url("/api/admin/sales"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (code, body) = crate::support::read(
        app.http
            .get(app.url("/api/sales/not-a-sale/status"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
