// PostgreSQL protocol 3 constants: message type bytes and startup codes.

// startup packet codes (the int32 after the length of an untyped packet)
export const PROTO_V3 = 0x00030000;
export const PROTO_V2 = 0x00020000;
export const CANCEL_REQUEST_CODE = 80877102;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;

// frontend (client -> server) message types
export const F_BIND = 0x42; // B
export const F_CLOSE = 0x43; // C
export const F_DESCRIBE = 0x44; // D
export const F_EXECUTE = 0x45; // E
export const F_FUNCTION_CALL = 0x46; // F
export const F_FLUSH = 0x48; // H
export const F_PARSE = 0x50; // P
export const F_QUERY = 0x51; // Q
export const F_SYNC = 0x53; // S
export const F_TERMINATE = 0x58; // X
export const F_COPY_FAIL = 0x66; // f
export const F_PASSWORD = 0x70; // p (also SASLInitialResponse / SASLResponse)

// shared
export const COPY_DATA = 0x64; // d
export const COPY_DONE = 0x63; // c

// backend (server -> client) message types
export const B_PARSE_COMPLETE = 0x31; // 1
export const B_BIND_COMPLETE = 0x32; // 2
export const B_CLOSE_COMPLETE = 0x33; // 3
export const B_NOTIFICATION = 0x41; // A
export const B_COMMAND_COMPLETE = 0x43; // C
export const B_DATA_ROW = 0x44; // D
export const B_ERROR = 0x45; // E
export const B_COPY_IN = 0x47; // G
export const B_COPY_OUT = 0x48; // H
export const B_EMPTY_QUERY = 0x49; // I
export const B_BACKEND_KEY = 0x4b; // K
export const B_NOTICE = 0x4e; // N
export const B_AUTH = 0x52; // R
export const B_PARAMETER_STATUS = 0x53; // S
export const B_ROW_DESCRIPTION = 0x54; // T
export const B_FUNCTION_RESULT = 0x56; // V
export const B_COPY_BOTH = 0x57; // W
export const B_READY_FOR_QUERY = 0x5a; // Z
export const B_NO_DATA = 0x6e; // n
export const B_PORTAL_SUSPENDED = 0x73; // s
export const B_PARAMETER_DESCRIPTION = 0x74; // t
export const B_NEGOTIATE_PROTOCOL = 0x76; // v

// Authentication request codes (body of 'R')
// the one-byte answers to an SSLRequest (and what a server too old for it says)
export const SSL_YES = 0x53; // S
export const SSL_NO = 0x4e; // N
export const SSL_ERROR = 0x45; // E: an ErrorResponse instead
/** the first byte of a TLS record carrying a handshake: a ClientHello sent without SSLRequest */
export const TLS_HANDSHAKE_RECORD = 0x16;
/** Describe and Close name a prepared statement ('S') or a portal ('P') */
export const TARGET_STATEMENT = 0x53;
export const TARGET_PORTAL = 0x50;

// ReadyForQuery transaction status
export const TX_IDLE = 0x49; // I: not in a transaction block
export const TX_IN_BLOCK = 0x54; // T
export const TX_FAILED = 0x45; // E: in a failed transaction block

export const AUTH_OK = 0;
export const AUTH_CLEARTEXT = 3;
export const AUTH_MD5 = 5;
export const AUTH_SASL = 10;
export const AUTH_SASL_CONTINUE = 11;
export const AUTH_SASL_FINAL = 12;

// SQLSTATEs pgbun itself uses
export const SQLSTATE_PROTOCOL_VIOLATION = '08P01';
export const SQLSTATE_CONFIG_FILE_ERROR = 'F0000';
export const SQLSTATE_SUCCESS = '00000';
