//! Fuzz target: arbitrary result buffers, as a Wasm guest writes them back
//! to the host, read as filter or router verdicts for a batch of 1 to 4
//! messages.
//!
//! The first byte picks the batch size, the plugin kind, and whether a
//! valid `status ok, count = batch` header goes in front of the arbitrary
//! bytes (so the fuzzer spends its time in the verdicts, not the header).
//!
//! Checks: no panic; a successful read has one verdict per message, each
//! within the ABI's limits; applying filter verdicts to the batch replaces
//! only what a rewrite names; re-encoding the verdicts reads back to the
//! same values; reading the same buffer twice with one router reader (its
//! output-name cache warm the second time) gives the same result.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{RouteVerdictReader, Verdicts, filter_verdicts};
use switchyard::message::{Message, Publisher, Topic};
use switchyard::plugin::{FilterVerdict, RouteVerdict};
use switchyard_sdk::abi;

fn batch(n: usize) -> Vec<Message> {
    let publisher = Publisher::new("fuzz", "");
    (0..n)
        .map(|i| {
            let topic = Topic::try_from(format!("t.{i}").as_str()).expect("a valid topic");
            let mut m = Message::new(topic, Bytes::from(vec![b'p'; i]), publisher.clone());
            m.attributes.insert("k".into(), format!("{i}"));
            m.priority = i as u8;
            m
        })
        .collect()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn header(out: &mut Vec<u8>, count: usize) {
    out.extend_from_slice(&abi::STATUS_OK.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
}

/// The ABI layout of filter verdicts (`sdk/ABI.md` §5), written
/// independently of the SDK's encoder.
fn encode_filters(verdicts: &[FilterVerdict]) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, verdicts.len());
    for v in verdicts {
        match v {
            FilterVerdict::Keep => out.push(abi::FILTER_KEEP),
            FilterVerdict::Drop => out.push(abi::FILTER_DROP),
            FilterVerdict::Reply(p) => {
                out.push(abi::FILTER_REPLY);
                put_bytes(&mut out, p);
            }
            FilterVerdict::Reject(r) => {
                out.push(abi::FILTER_REJECT);
                put_bytes(&mut out, r.as_bytes());
            }
            FilterVerdict::Rewrite {
                topic,
                payload,
                attributes,
            } => {
                out.push(abi::FILTER_REWRITE);
                let mut fields = 0;
                if topic.is_some() {
                    fields |= abi::REWRITE_TOPIC;
                }
                if payload.is_some() {
                    fields |= abi::REWRITE_PAYLOAD;
                }
                if attributes.is_some() {
                    fields |= abi::REWRITE_ATTRIBUTES;
                }
                out.push(fields);
                if let Some(t) = topic {
                    put_bytes(&mut out, t.as_bytes());
                }
                if let Some(p) = payload {
                    put_bytes(&mut out, p);
                }
                if let Some(a) = attributes {
                    out.extend_from_slice(&(a.len() as u32).to_le_bytes());
                    for (k, v) in a {
                        put_bytes(&mut out, k.as_bytes());
                        put_bytes(&mut out, v.as_bytes());
                    }
                }
            }
        }
    }
    out
}

fn encode_routes(verdicts: &[RouteVerdict]) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, verdicts.len());
    for v in verdicts {
        match v {
            RouteVerdict::Outputs(names) => {
                out.push(abi::ROUTE_OUTPUTS);
                out.extend_from_slice(&(names.len() as u32).to_le_bytes());
                for n in names {
                    put_bytes(&mut out, n.as_bytes());
                }
            }
            RouteVerdict::Default => out.push(abi::ROUTE_DEFAULT),
            RouteVerdict::DeadLetter => out.push(abi::ROUTE_DEAD_LETTER),
        }
    }
    out
}

fn check_guest_error(message: &str) {
    assert!(message.len() <= 1024, "guest message of {}", message.len());
}

fn check_filters(buf: &[u8], msgs: &[Message]) {
    let verdicts = match filter_verdicts(buf, msgs.len()) {
        Ok(Verdicts::Ok(v)) => v,
        Ok(Verdicts::Guest { message, .. }) => return check_guest_error(&message),
        Err(e) => return assert!(!e.is_empty()),
    };
    assert_eq!(verdicts.len(), msgs.len());
    for (v, m) in verdicts.iter().zip(msgs) {
        match v {
            FilterVerdict::Reject(r) => assert!(r.len() <= abi::MAX_REJECT_REASON as usize),
            FilterVerdict::Rewrite {
                attributes: Some(a),
                ..
            } => assert!(a.keys().all(|k| !k.is_empty())),
            _ => {}
        }
        let applied = v.clone().apply(m.clone());
        match (v, applied) {
            (FilterVerdict::Keep, Some(out)) => assert_eq!(&out, m),
            (FilterVerdict::Drop | FilterVerdict::Reply(_) | FilterVerdict::Reject(_), None) => {}
            (
                FilterVerdict::Rewrite {
                    topic,
                    payload,
                    attributes,
                },
                Some(out),
            ) => {
                assert_eq!(&out.topic, topic.as_ref().unwrap_or(&m.topic));
                assert_eq!(&out.payload, payload.as_ref().unwrap_or(&m.payload));
                assert_eq!(
                    &out.attributes,
                    attributes.as_ref().unwrap_or(&m.attributes)
                );
                assert_eq!(
                    (out.id, out.publish_time, &out.publisher, out.priority),
                    (m.id, m.publish_time, &m.publisher, m.priority)
                );
            }
            (v, out) => panic!("{v:?} applied gave {out:?}"),
        }
    }
    assert_eq!(
        filter_verdicts(&encode_filters(&verdicts), msgs.len()),
        Ok(Verdicts::Ok(verdicts)),
        "re-encoded filter verdicts read back differently"
    );
}

fn check_routes(buf: &[u8], n: usize) {
    let mut reader = RouteVerdictReader::default();
    let first = reader.read(buf, n);
    assert_eq!(
        reader.read(buf, n),
        first,
        "the name cache changed a result"
    );
    let verdicts = match first {
        Ok(Verdicts::Ok(v)) => v,
        Ok(Verdicts::Guest { message, .. }) => return check_guest_error(&message),
        Err(e) => return assert!(!e.is_empty()),
    };
    assert_eq!(verdicts.len(), n);
    for v in &verdicts {
        if let RouteVerdict::Outputs(names) = v {
            assert!((1..=abi::MAX_ROUTE_OUTPUTS as usize).contains(&names.len()));
            assert!(
                names
                    .iter()
                    .all(|n| (1..=abi::MAX_OUTPUT_NAME as usize).contains(&n.len()))
            );
        }
    }
    assert_eq!(
        reader.read(&encode_routes(&verdicts), n),
        Ok(Verdicts::Ok(verdicts)),
        "re-encoded router verdicts read back differently"
    );
}

fuzz_target!(|data: &[u8]| {
    let [sel, rest @ ..] = data else {
        return;
    };
    let n = 1 + usize::from(sel & 3);
    let mut buf = Vec::with_capacity(8 + rest.len());
    if sel & 0x20 != 0 {
        header(&mut buf, n);
    }
    buf.extend_from_slice(rest);
    if sel & 0x10 == 0 {
        check_filters(&buf, &batch(n));
    } else {
        check_routes(&buf, n);
    }
});
