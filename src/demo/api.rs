//! A small client for the engine's own HTTP API: the demo drives Tuma the
//! way a product service does.

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            http: reqwest::Client::new(),
            base,
        }
    }

    /// POSTs `body` with `key` (and an Idempotency-Key); the status and the
    /// answer.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// As [`Api::post`], and the answer must be a success.
    pub async fn ok(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) = self.post(path, key, body).await?;
        anyhow::ensure!(status.is_success(), "POST {path} answered {status}: {answer}");
        Ok(answer)
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        let status = response.status();
        let answer = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "PUT {path} answered {status}: {answer}");
        Ok(answer)
    }

    pub async fn get(&self, path: &str, key: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let answer = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "GET {path} answered {status}: {answer}");
        Ok(answer)
    }
}
