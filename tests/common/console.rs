//! A browser-like client of the admin console over plain HTTP: it keeps the
//! session cookie, follows no redirects (tests look at them), and sends the
//! session's CSRF token with every form.
#![allow(dead_code)]

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use tuma::console::Role;

use super::app::TestApp;

pub struct Console {
    pub http: reqwest::Client,
    pub base: String,
    /// `tuma_console=<token>`.
    pub cookie: String,
    pub csrf: String,
}

/// The password every test user gets.
pub fn password_of(name: &str) -> String {
    format!("a long password for {name}")
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page has a form with a csrf field") + marker.len();
    html[start..start + 64].to_owned()
}

/// The `name=value` part of the `Set-Cookie` for `name`.
pub fn cookie_of(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

pub fn location(response: &Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// Creates a console user `name` with `role` (password [`password_of`]).
    pub async fn console_user(&self, name: &str, role: Role) {
        tuma::console::create_user(&self.db.pool, name, role, &password_of(name), None)
            .await
            .unwrap();
    }

    /// Posts the sign-in form with `fields`; returns the response.
    pub async fn console_sign_in(&self, fields: &[(&str, &str)]) -> Response {
        let http = client();
        let page = http.get(self.url("/console/login")).send().await.unwrap();
        let login_cookie = cookie_of(&page, "tuma_console_login").expect("the sign-in page sets its form cookie");
        let csrf = csrf_in(&page.text().await.unwrap());
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend_from_slice(fields);
        http.post(self.url("/console/login"))
            .header(COOKIE, login_cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Signs `name` in with their password.
    pub async fn console_as(&self, name: &str) -> Console {
        let password = password_of(name);
        let response = self
            .console_sign_in(&[("username", name), ("password", &password)])
            .await;
        self.console_session(response).await
    }

    /// Signs in with an API key (admin scope).
    pub async fn console_with_key(&self, key: &str) -> Console {
        let response = self.console_sign_in(&[("api_key", key)]).await;
        self.console_session(response).await
    }

    async fn console_session(&self, response: Response) -> Console {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "sign-in did not redirect");
        let cookie = cookie_of(&response, "tuma_console").expect("sign-in sets the session cookie");
        let mut console = Console {
            http: client(),
            base: self.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let overview = console.get("/console").await;
        assert_eq!(overview.status(), StatusCode::OK);
        console.csrf = csrf_in(&overview.text().await.unwrap());
        console
    }
}

impl Console {
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// GETs a page that must answer 200 and returns its HTML.
    pub async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POSTs a form with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    /// POSTs exactly `fields` (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap()
    }
}
