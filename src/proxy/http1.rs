//! The bytes of HTTP/1.x, both directions and both sides: request and response heads (`wire`,
//! over httparse) and chunked bodies (`chunked`). Pure functions over buffers: no I/O, no
//! topology. The client engine (`proxy::h1`) and the backend client (`proxy::upstream`) both
//! read and write through it.

pub(super) mod chunked;
pub(super) mod wire;
