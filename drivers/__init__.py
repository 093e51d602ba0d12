"""Field protocols: Modbus RTU/TCP transports, register-map decoding and read planning.

API notes for users of this package (differences from the agreed sketch):
- `Profile.vendor` / `Profile.model` are read-only properties; in YAML they live in the
  `identification` block (`identification.vendor`, `identification.model`).
- `Identification` has `vendor_id`, `model_id`, `firmware_version` (each an `IdRegister` with
  `table`, `address`, `dtype`, `expect`), `as_points()` to plan (drivers.planner) and decode
  (drivers.values) them, and `matches(values)` for a bus scan.
- `drivers.profile.parse_profile(data, source)` validates already-parsed data (e.g. a site file).
- `drivers.values.decode_point`, `encode_value`, `write_function` (the value codec);
  `drivers.planner.plan_reads`, `split_read`; `ReadRequest.function`
  (Modbus function code) and `ReadRequest.rtu_bytes` (request/response sizes on an RTU line).
- Links: `ModbusTcpLink`, `ModbusSerialLink`, `RtuOverTcpLink` and `poll_device` live in
  `drivers.link`; all are `Link` subclasses. `Link.aclose()` closes; the next request reopens.
- bool on a holding/input register means "register != 0" (written as 1/0); `bit` points are
  read-only (writing one bit would need its whole register).
"""
