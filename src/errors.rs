//! errors: owns the one-line form of an error and its causes, for logs, gRPC messages and
//! lbctl's stderr. It formats only; it never decides what an error means.

use std::error::Error;

/// An error and its causes joined with `: `, e.g. `transport error: tcp connect error:
/// Connection refused (os error 111)`. Top-level messages of hyper, tonic and rustls say little
/// alone ("transport error"); the causes say what happened. A cause whose text the previous part
/// already ends with is left out, since transport errors repeat themselves (hyper-util's
/// `tcp connect error` wraps another `tcp connect error`).
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_joined_and_repeats_dropped() {
        let refused = Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error",
                Some(Box::new(Layer(
                    "tcp connect error",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&refused),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
