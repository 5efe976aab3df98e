//! A PostgreSQL [`Store`](steadfast_engine::store::Store) for Steadfast (work in progress).

#[doc(hidden)]
pub mod testing;
