//! routing: TEMPORARY stub (replaced by the real ServeMux implementation on merge).

#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    path: String,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct PatternError(String);

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let path = s.rsplit(' ').next().unwrap_or(s);
        if !path.starts_with('/') {
            return Err(PatternError("path must start with /".into()));
        }
        Ok(Pattern {
            text: s.to_owned(),
            path: path.to_owned(),
        })
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("pattern {new:?} conflicts with pattern {existing:?}: {reason}")]
pub struct ConflictError {
    pub existing: String,
    pub new: String,
    pub existing_index: usize,
    pub new_index: usize,
    pub reason: String,
}

#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(Pattern, T)>,
}

pub enum Route<'a, T> {
    Matched(&'a T),
    Redirect(String),
    MethodNotAllowed,
    NotFound,
}

impl<T> Router<T> {
    pub fn new(routes: Vec<(Pattern, T)>) -> Result<Router<T>, ConflictError> {
        Ok(Router { routes })
    }
    pub fn route<'a>(&'a self, _method: &http::Method, _host: &str, path: &str) -> Route<'a, T> {
        let mut best: Option<&(Pattern, T)> = None;
        for r in &self.routes {
            let p = &r.0.path;
            let hit = if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            };
            if hit && best.is_none_or(|b| b.0.path.len() < p.len()) {
                best = Some(r);
            }
        }
        match best {
            Some(b) => Route::Matched(&b.1),
            None => {
                let slash = format!("{path}/");
                if self.routes.iter().any(|r| r.0.path == slash) {
                    Route::Redirect(slash)
                } else {
                    Route::NotFound
                }
            }
        }
    }
    pub fn len(&self) -> usize {
        self.routes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
