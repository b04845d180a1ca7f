;; A filter written in WebAssembly text against sdk/ABI.md, without the SDK:
;; drops messages whose topic starts with `d`, keeps the rest. When the
;; first topic of a batch starts with `h`, it first runs HOSTILE (replaced
;; by the test: instructions inside switchyard_batch). Shared by the plugin
;; host tests, the pipeline unit tests and the end-to-end tests.
(module
  (import "env" "switchyard_log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 3)
  (data (i32.const 16) "wat filter ready")
  ;; Results are written at 2048; the host's region is page 1.
  (func (export "switchyard_abi_version") (result i32) (i32.const 1))
  (func (export "switchyard_kind") (result i32) (i32.const 1))
  (func (export "switchyard_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65536))
      (then (i32.const 0))
      (else (i32.const 65536))))
  (func $ok (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "switchyard_init") (param i32 i32) (result i64)
    (call $log (i32.const 3) (i32.const 16) (i32.const 16))
    (i32.store (i32.const 2048) (i32.const 0))
    (call $ok (i32.const 4)))
  ;; Skips a length-prefixed field at $p.
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
  (func $deep (param $d i32) (result i32)
    (i32.add (call $deep (i32.add (local.get $d) (i32.const 1))) (i32.const 1)))
  (func (export "switchyard_batch") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $p i32) (local $out i32) (local $attrs i32)
    (local.set $n (i32.load (local.get $ptr)))
    ;; header 16 + fixed 25 + topic length 4: the first topic byte.
    (if (i32.eq (i32.load8_u (i32.add (local.get $ptr) (i32.const 45))) (i32.const 104))
      (then HOSTILE))
    (i32.store (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (local.get $n))
    (local.set $out (i32.const 2056))
    (local.set $p (i32.add (local.get $ptr) (i32.const 16)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $p) (i32.const 25)))
        ;; 'd' (100) -> 1 (drop), else 0 (keep)
        (i32.store8 (local.get $out)
          (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 4))) (i32.const 100)))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $p (call $skip (local.get $p)))
        (local.set $p (call $skip (local.get $p)))
        (local.set $p (call $skip (local.get $p)))
        (local.set $attrs (i32.load (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (block $attrs_done
          (loop $attr
            (br_if $attrs_done (i32.eqz (local.get $attrs)))
            (local.set $p (call $skip (call $skip (local.get $p))))
            (local.set $attrs (i32.sub (local.get $attrs) (i32.const 1)))
            (br $attr)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $ok (i32.sub (local.get $out) (i32.const 2048))))
)
