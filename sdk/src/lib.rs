#![doc = include_str!("../README.md")]
//!
//! # Module map
//!
//! - [`Filter`], [`Router`], [`filter!`] and [`router!`]: what a plugin
//!   implements and how it is exported.
//! - [`Message`] and [`Attributes`]: borrowed views of one message.
//! - [`Verdict`], [`Rewrite`] and [`Route`]: the answers.
//! - [`json`]: zero-allocation lookups of one JSON field.
//! - [`log`]: the router's log, the plugin's only import.
//! - [`testing`]: run a plugin natively in `cargo test`.
//! - [`abi`]: the ABI's numbers; `ABI.md` is the full specification.

pub mod abi;
mod error;
#[doc(hidden)]
pub mod guest;
pub mod json;
pub mod log;
mod message;
pub mod testing;
mod verdict;

pub use error::{Config, Error};
pub use message::{
    AttributeIter, Attributes, Batch, BatchWriter, Checking, DecodeError, Message, Messages,
    OwnedMessage,
};
pub use verdict::{Rewrite, Route, Verdict};

#[cfg(feature = "json")]
pub use serde_json;

/// A filter plugin: built once per instance from its config, then asked
/// about every message.
pub trait Filter: Sized + 'static {
    /// Builds the filter from the plugin's `config` table.
    ///
    /// # Errors
    /// An [`Error`] refuses the plugin at load, with its message.
    fn init(config: &Config<'_>) -> Result<Self, Error>;

    /// Keeps, drops or rewrites one message.
    fn filter(&mut self, msg: &Message<'_>) -> Verdict;
}

/// A router plugin: built once per instance from its config, then asked
/// where every message goes.
pub trait Router: Sized + 'static {
    /// Builds the router from the plugin's `config` table.
    ///
    /// # Errors
    /// An [`Error`] refuses the plugin at load, with its message.
    fn init(config: &Config<'_>) -> Result<Self, Error>;

    /// Picks the outputs of one message.
    fn route(&mut self, msg: &Message<'_>) -> Route<'_>;
}

/// Exports a filter plugin.
///
/// - `filter!(fn name)` for a function `fn(&Message<'_>) -> Verdict`
///   (no config, no state);
/// - `filter!(Type)` for a type implementing [`Filter`].
///
/// Use it once per crate (a `cdylib`). The exports exist only when built for
/// `wasm32`; natively the crate is an ordinary library for tests.
#[macro_export]
macro_rules! filter {
    (fn $f:path) => {
        /// The exported filter function as a [`Filter`].
        #[doc(hidden)]
        pub struct SwitchyardFnFilter;
        impl $crate::Filter for SwitchyardFnFilter {
            fn init(_: &$crate::Config<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(Self)
            }
            fn filter(&mut self, msg: &$crate::Message<'_>) -> $crate::Verdict {
                $f(msg)
            }
        }
        $crate::__export!(
            SwitchyardFnFilter,
            Filter,
            batch_filter,
            $crate::abi::KIND_FILTER
        );
    };
    ($t:ty) => {
        $crate::__export!($t, Filter, batch_filter, $crate::abi::KIND_FILTER);
    };
}

/// Exports a router plugin.
///
/// - `router!(fn name)` for a function `fn(&Message<'_>) -> Route<'static>`;
/// - `router!(Type)` for a type implementing [`Router`].
#[macro_export]
macro_rules! router {
    (fn $f:path) => {
        /// The exported router function as a [`Router`].
        #[doc(hidden)]
        pub struct SwitchyardFnRouter;
        impl $crate::Router for SwitchyardFnRouter {
            fn init(_: &$crate::Config<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(Self)
            }
            fn route(&mut self, msg: &$crate::Message<'_>) -> $crate::Route<'_> {
                $f(msg)
            }
        }
        $crate::__export!(
            SwitchyardFnRouter,
            Router,
            batch_router,
            $crate::abi::KIND_ROUTER
        );
    };
    ($t:ty) => {
        $crate::__export!($t, Router, batch_router, $crate::abi::KIND_ROUTER);
    };
}

/// The ABI exports for a plugin type; used by [`filter!`] and [`router!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($t:ty, $trait:ident, $batch:ident, $kind:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static SWITCHYARD_PLUGIN: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_abi_version() -> i32 {
                $crate::abi::ABI_VERSION
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_kind() -> i32 {
                $kind
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_alloc(len: i32) -> i32 {
                $crate::guest::alloc(len)
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_init(ptr: i32, len: i32) -> i64 {
                $crate::guest::init(&SWITCHYARD_PLUGIN, <$t as $crate::$trait>::init, ptr, len)
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_batch(ptr: i32, len: i32) -> i64 {
                $crate::guest::$batch(&SWITCHYARD_PLUGIN, ptr, len)
            }
        };
    };
}
