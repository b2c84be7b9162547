//! stub
#[derive(Debug, thiserror::Error)]
#[error("write")]
pub struct WriteError;
pub fn write_atomic(_path: &std::path::Path, _contents: &str) -> Result<(), WriteError> {
    Err(WriteError)
}
