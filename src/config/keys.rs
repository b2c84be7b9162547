//! The key paths lb.toml accepts, read off the parser's own serde shape so the list cannot drift
//! from what the parser takes. A tracing deserializer walks a `Deserialize` type once, feeding it
//! one placeholder value of every field, and records each field's dotted path. It owns nothing
//! else and never parses a real file.

use std::cell::RefCell;

use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// `toml`'s `Spanned<T>` deserializes as a struct of this name (start, end, then `T` itself);
/// its fields are not keys of the file.
const SPANNED: &str = "$__serde_spanned_private_Spanned";

/// Every field path of `T`, each under `prefix` (`""` for the top level); a map's key is `*` and
/// an array's element has its array's path. An untagged enum hides its table form (serde
/// buffers it), so such a table is traced on its own and placed with its own `prefix`.
pub(super) fn field_paths<'de, T: Deserialize<'de>>(prefix: &str) -> Vec<String> {
    let paths = RefCell::new(Vec::new());
    // The placeholders (empty strings, zeros) may fail a type's own checks after its fields
    // were visited; the fields seen by then are what is wanted.
    let _ = T::deserialize(Tracer {
        path: prefix.to_owned(),
        paths: &paths,
    });
    paths.into_inner()
}

struct Tracer<'a> {
    path: String,
    paths: &'a RefCell<Vec<String>>,
}

impl<'a> Tracer<'a> {
    fn child(&self, segment: &str) -> Tracer<'a> {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{}.{segment}", self.path)
        };
        Tracer {
            path,
            paths: self.paths,
        }
    }

    fn same(&self) -> Tracer<'a> {
        Tracer {
            path: self.path.clone(),
            paths: self.paths,
        }
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    // A number field must not end the trace: the fields of the tables after it would be lost.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let throwaway = RefCell::new(Vec::new());
        let key = Tracer {
            path: String::new(),
            paths: &throwaway,
        };
        visitor.visit_map(Entries(vec![(Key::Traced(key), self.child("*"))]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut entries = Vec::with_capacity(fields.len());
        for field in fields.iter().rev() {
            // A spanned value's start, end and value all stand at the value's own path.
            let value = if name == SPANNED {
                self.same()
            } else {
                let child = self.child(field);
                self.paths.borrow_mut().push(child.path.clone());
                child
            };
            entries.push((Key::Name(field), value));
        }
        visitor.visit_map(Entries(entries))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

enum Key<'a> {
    Name(&'static str),
    Traced(Tracer<'a>),
}

/// A struct's or map's entries, last first so `pop` yields them in order.
struct Entries<'a>(Vec<(Key<'a>, Tracer<'a>)>);

impl<'de, 'a> MapAccess<'de> for Entries<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, _)) = self.0.last_mut() else {
            return Ok(None);
        };
        match key {
            Key::Name(name) => seed
                .deserialize(BorrowedStrDeserializer::new(name))
                .map(Some),
            Key::Traced(tracer) => seed.deserialize(tracer.same()).map(Some),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let (_, value) = self
            .0
            .pop()
            .ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(value)
    }
}

/// An array with one element traced at the array's path.
struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        match self.0.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}
