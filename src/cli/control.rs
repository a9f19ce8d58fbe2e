//! Finding and authenticating to the running relay's control plane from the
//! CLI: the URL comes from the same variables `serve` reads
//! (RELAY_CONTROL_BIND or RELAY_BIND, RELAY_CONTROL_PORT) unless
//! RELAY_CONTROL_URL names it; the credential is RELAY_ADMIN_TOKEN, else the
//! per-boot token `serve` writes to RELAY_DATA_DIR/control.token.

use std::net::IpAddr;
use std::path::PathBuf;

use super::serve::ControlPort;
use super::DataDirArg;
use crate::http::session::LOCAL_TOKEN_FILE;

#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Control plane of the running relay. Default: derived from
    /// RELAY_CONTROL_BIND (or RELAY_BIND) and RELAY_CONTROL_PORT, as `serve`
    /// uses them (a wildcard address means this machine).
    #[arg(long, env = "RELAY_CONTROL_URL")]
    pub control_url: Option<String>,
    /// The running relay's RELAY_BIND (used to derive the control URL).
    #[arg(long, env = "RELAY_BIND", default_value = "0.0.0.0", hide = true)]
    pub bind: IpAddr,
    /// The running relay's RELAY_CONTROL_BIND (used to derive the control URL).
    #[arg(long, env = "RELAY_CONTROL_BIND", hide = true)]
    pub control_bind: Option<IpAddr>,
    /// The running relay's RELAY_CONTROL_PORT (used to derive the control URL).
    #[arg(long, env = "RELAY_CONTROL_PORT", default_value = "8081", hide = true)]
    pub control_port: ControlPort,
    /// Admin token for the control plane. Default: the per-boot token the
    /// running relay wrote to RELAY_DATA_DIR/control.token.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token; instead of RELAY_ADMIN_TOKEN.
    #[arg(long, env = "RELAY_ADMIN_TOKEN_FILE", value_name = "PATH", value_parser = super::secret_file, conflicts_with = "admin_token")]
    pub admin_token_file: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

impl ControlArgs {
    /// The control plane's base URL, without a trailing slash.
    pub fn url(&self) -> Result<String, String> {
        if let Some(u) = self.control_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(u.trim_end_matches('/').to_string());
        }
        let port = self.control_port.0.ok_or(
            "RELAY_CONTROL_PORT is `off`: the running relay has no control plane to ask; set RELAY_STATE_URL to \
             reach Redis directly, or RELAY_CONTROL_URL",
        )?;
        let ip = match self.control_bind.unwrap_or(self.bind) {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        })
    }

    fn token_path(&self) -> PathBuf {
        self.data.data_dir.join(LOCAL_TOKEN_FILE)
    }

    /// RELAY_ADMIN_TOKEN, else the running relay's per-boot token file.
    pub fn token(&self) -> Result<String, String> {
        if let Some(t) = self
            .admin_token
            .as_deref()
            .or(self.admin_token_file.as_deref())
            .filter(|t| !t.is_empty())
        {
            return Ok(t.to_string());
        }
        let path = self.token_path();
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => Err(format!("{} is empty", path.display())),
            Err(e) => Err(format!(
                "no credential for the control plane: RELAY_ADMIN_TOKEN is unset and the running relay's per-boot \
                 token {} cannot be read ({e}); set RELAY_DATA_DIR to the server's data directory (run this on its \
                 machine, as its user), or set RELAY_ADMIN_TOKEN",
                path.display()
            )),
        }
    }

    /// One JSON call to the control plane.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let token = self.token()?;
        let url = format!("{}{path}", self.url()?);
        let mut req = reqwest::Client::new()
            .request(method, &url)
            .timeout(std::time::Duration::from_secs(10))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "cannot reach the control plane at {url}: {e}; is `relay serve` running? (the URL comes from \
                 RELAY_CONTROL_URL, or RELAY_CONTROL_BIND / RELAY_BIND and RELAY_CONTROL_PORT)"
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{url} answered with invalid JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: ControlArgs,
    }

    fn url(args: &[&str]) -> String {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map(|t| t.c.url()).unwrap().unwrap()
    }

    #[test]
    fn control_url_follows_serve_variables() {
        assert_eq!(url(&[]), "http://127.0.0.1:8081");
        assert_eq!(url(&["--control-port", "9191"]), "http://127.0.0.1:9191");
        assert_eq!(url(&["--bind", "10.1.2.3"]), "http://10.1.2.3:8081");
        assert_eq!(
            url(&[
                "--bind",
                "10.1.2.3",
                "--control-bind",
                "::",
                "--control-port",
                "1"
            ]),
            "http://[::1]:1"
        );
        assert_eq!(url(&["--control-url", "http://x:1/"]), "http://x:1");
    }
}
