"""Field protocols: Modbus RTU/TCP transports, register-map decoding and read planning."""
