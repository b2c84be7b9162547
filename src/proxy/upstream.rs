//! The pooled HTTP/1.1 client to backends. One per distinct `connect_timeout`, shared by every
//! pool and every topology that uses that timeout, so keep-alive connections survive reloads.

use std::time::Duration;

use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::RequestBody;

#[derive(Clone, Debug)]
pub struct Upstream {
    pub client: Client<HttpConnector, RequestBody>,
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            // The client's Host header is forwarded as is; only fill it when absent (HTTP/2).
            .set_host(true)
            .build(connector);
        Upstream { client }
    }
}
