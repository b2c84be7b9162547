//! lb: a layer-7 HTTP load balancer whose topology lives in `lb.toml`.

pub mod routing;
