//! stub
#[derive(Debug, Clone)]
pub struct HealthCheckSpec {
    pub url_path: String,
    pub healthy_values: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub pool_type: String,
    pub interval: String,
    pub health_checks: Vec<HealthCheckSpec>,
}
#[derive(Debug, thiserror::Error)]
#[error("edit")]
pub struct EditError;
pub fn add_backend(_text: &str, _pattern: &str, _backend: &str) -> Result<String, EditError> {
    Err(EditError)
}
pub fn remove_backend(
    _text: &str,
    _pattern: &str,
    _matches: &dyn Fn(&str) -> bool,
) -> Result<String, EditError> {
    Err(EditError)
}
pub fn add_pool(_text: &str, _pattern: &str, _spec: &PoolSpec) -> Result<String, EditError> {
    Err(EditError)
}
pub fn remove_pool(_text: &str, _pattern: &str) -> Result<String, EditError> {
    Err(EditError)
}
