//! The ABI glue the `filter!` and `router!` macros call: the host's input
//! region, the result buffer, init and batch entry points, and the panic
//! hook. Not for direct use; the macros are the interface.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::abi;
use crate::error::{Config, Error};
use crate::message::{Batch, put_bytes, put_u32};
use crate::verdict::{encode_route, encode_verdict};
use crate::{Filter, Router};

/// The guest's buffers: the region the host writes into and the buffer
/// results are returned in. Both keep their capacity across calls, so a
/// batch allocates nothing in steady state.
#[derive(Default)]
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    // wasm32-unknown-unknown has one thread: this is a plain global.
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// The host's bytes, if `ptr`/`len` name the region we handed out.
fn region(input: &[u8], ptr: i32, len: i32) -> Result<&[u8], &'static str> {
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    if ptr as u32 as usize != input.as_ptr() as usize || len > input.len() {
        return Err("the region is not the one switchyard_alloc returned");
    }
    Ok(&input[..len])
}

fn result_word(out: &[u8]) -> i64 {
    abi::pack_result(out.as_ptr() as usize as u32, out.len() as u32)
}

fn write_error(out: &mut Vec<u8>, code: u32, message: &str) {
    out.clear();
    put_u32(out, abi::STATUS_ERROR);
    put_u32(out, code);
    put_bytes(out, message.as_bytes());
}

/// `switchyard_alloc`: resizes the host region to at least `len` bytes.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    BUFFERS.with_borrow_mut(|b| {
        if b.input.len() < len {
            b.input = vec![0; len];
        }
        b.input.as_ptr() as usize as i32
    })
}

fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // The module aborts right after this; the host reports the trap
            // as a panic carrying this text.
            crate::log::raw(abi::LOG_PANIC, &info.to_string());
        }));
    });
}

/// `switchyard_init` for any plugin type built by `make`.
pub fn init<P: 'static>(
    slot: &'static LocalKey<RefCell<Option<P>>>,
    make: fn(&Config<'_>) -> Result<P, Error>,
    ptr: i32,
    len: i32,
) -> i64 {
    install_panic_hook();
    BUFFERS.with_borrow_mut(|b| {
        let Buffers { input, output } = b;
        let result = match region(input, ptr, len) {
            Err(e) => Err(Error::with_code(abi::ERROR_INPUT, e)),
            Ok(bytes) => match std::str::from_utf8(bytes) {
                Err(_) => Err(Error::with_code(
                    abi::ERROR_INPUT,
                    "config is not UTF-8 JSON",
                )),
                Ok(json) => make(&Config::new(json)),
            },
        };
        output.clear();
        match result {
            Ok(p) => {
                slot.with_borrow_mut(|s| *s = Some(p));
                put_u32(output, abi::STATUS_OK);
            }
            Err(e) => write_error(output, e.code(), e.message()),
        }
        result_word(output)
    })
}

/// Decodes the batch at `ptr`/`len` and runs `each` over it with the
/// plugin, writing the result buffer.
fn run_batch<P: 'static>(
    slot: &'static LocalKey<RefCell<Option<P>>>,
    ptr: i32,
    len: i32,
    mut each: impl FnMut(&mut P, &crate::Message<'_>, &mut Vec<u8>),
) -> i64 {
    BUFFERS.with_borrow_mut(|b| {
        let Buffers { input, output } = b;
        output.clear();
        match region(input, ptr, len)
            .map_err(|e| e.to_owned())
            .and_then(|bytes| Batch::header(bytes).map_err(|e| e.to_string()))
        {
            Err(e) => write_error(output, abi::ERROR_INPUT, &e),
            Ok(batch) => slot.with_borrow_mut(|plugin| match plugin {
                None => write_error(output, abi::ERROR_STATE, "batch before init"),
                Some(p) => {
                    put_u32(output, abi::STATUS_OK);
                    put_u32(output, batch.len() as u32);
                    // One pass: each message is checked as it is read; a
                    // bad one turns the whole result into an error.
                    let mut msgs = batch.checking();
                    let bad = loop {
                        match msgs.next_checked() {
                            Ok(Some(msg)) => each(p, &msg, output),
                            Ok(None) => break msgs.finish().err(),
                            Err(e) => break Some(e),
                        }
                    };
                    if let Some(e) = bad {
                        write_error(output, abi::ERROR_INPUT, &e.to_string());
                    }
                }
            }),
        }
        result_word(output)
    })
}

/// `switchyard_batch` for a filter.
pub fn batch_filter<F: Filter>(
    slot: &'static LocalKey<RefCell<Option<F>>>,
    ptr: i32,
    len: i32,
) -> i64 {
    run_batch(slot, ptr, len, |p, msg, out| {
        encode_verdict(out, &p.filter(msg))
    })
}

/// `switchyard_batch` for a router.
pub fn batch_router<R: Router>(
    slot: &'static LocalKey<RefCell<Option<R>>>,
    ptr: i32,
    len: i32,
) -> i64 {
    run_batch(slot, ptr, len, |p, msg, out| {
        encode_route(out, &p.route(msg))
    })
}
