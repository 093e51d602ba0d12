// A real TimescaleDB engine for the test suite: PGlite (PostgreSQL 17 compiled to WASM) with the
// TimescaleDB extension, served over the PostgreSQL wire protocol on 127.0.0.1 for psycopg 3.
//
//   node server.mjs <port> [--exit-on-stdin-eof]
//
// Port 0 picks a free port. Prints one line `READY port=<port> ...` once it accepts connections.
// In memory only; SIGTERM/SIGINT (or, with --exit-on-stdin-eof, the parent closing our stdin)
// stops it. PGLITE_DEBUG=1 logs every batch; PGLITE_SESSION_WAIT_MS (default 30000) bounds how
// long a connection waits for the single session before it gets a FATAL error.
//
// Why not `pglite-server` from @electric-sql/pglite-socket 0.0.19 (the release for PGlite 0.3.14,
// which this TimescaleDB build is): it hands raw TCP chunks to PGlite, so a message split across
// reads crashes the WASM backend (psycopg executemany and pipelines; electric-sql/pglite#775,
// #873); it dispatches each message of COPY FROM STDIN separately, which PGlite cannot resume
// (electric-sql/pglite#1028, #911); and it serves one client at a time, while psycopg_pool opens
// several. This shim:
//   1. frames whole messages before anything reaches PGlite;
//   2. buffers the COPY FROM STDIN sub-protocol and submits it in one call;
//   3. multiplexes many connections onto PGlite's ONE session, handing it over only when the
//      owner is between transactions, and renames prepared statements per connection;
//   4. cleans up (ROLLBACK, DEALLOCATE) after a connection that goes away.
// What it cannot do: real isolation (SET, search_path, temp tables are shared by every
// connection; one transaction at a time), CancelRequest, extended-protocol COPY, TLS.
import net from 'node:net'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'

const port = parseInt(process.argv[2] ?? '', 10)
if (!Number.isInteger(port)) { console.error('usage: node server.mjs <port> [--exit-on-stdin-eof]'); process.exit(2) }
const DEBUG = process.env.PGLITE_DEBUG === '1'
const WAIT_MS = parseInt(process.env.PGLITE_SESSION_WAIT_MS ?? '30000', 10)
// PGlite 0.3.14 mishandles one execProtocolRaw input holding a long run of extended-protocol
// messages: a psycopg pipeline of 2000 x 5 KB INSERTs hung here (an earlier prototype also saw
// smaller ones lose rows without an error). Feeding it runs of whole messages of at most CHUNK
// bytes avoids that. (COPY is not affected: a 20 MB COPY went through in one call.)
const CHUNK = 8000
const log = (...a) => DEBUG && console.error('[tsdb]', ...a)
const t0 = Date.now()

const db = await PGlite.create({ dataDir: 'memory://', extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
// This build defaults client_min_messages to debug3: a DEBUG notice for every Parse and Bind.
await db.exec('SET client_min_messages = notice; ALTER ROLE postgres SET client_min_messages = notice')

// ---- wire-protocol helpers -----------------------------------------------------------------
const msg = (type, body) => {                 // one typed message: type, int32 length, body
  const b = Buffer.alloc(5 + body.length)
  b.write(type, 0, 'latin1'); b.writeInt32BE(4 + body.length, 1); Buffer.from(body).copy(b, 5)
  return b
}
const cstr = (s) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])])
const split = (buf) => {                      // backend output -> [{type, buf}]
  const out = []
  for (let o = 0; o + 5 <= buf.length;) {
    const end = o + 1 + buf.readInt32BE(o + 1)
    out.push({ type: String.fromCharCode(buf[o]), buf: buf.subarray(o, end) }); o = end
  }
  return out
}
const fatal = (code, text) => {                // ErrorResponse, severity FATAL
  const f = (k, v) => Buffer.concat([Buffer.from(k), cstr(v)])
  return msg('E', Buffer.concat([f('S', 'FATAL'), f('V', 'FATAL'), f('C', code), f('M', text), Buffer.from([0])]))
}
const SSL_REQUEST = 80877103, GSS_REQUEST = 80877104, CANCEL_REQUEST = 80877102

// ---- the one PGlite session ----------------------------------------------------------------
let sessionStatus = 'I'                      // transaction status of the last ReadyForQuery
async function exec(buf) {                   // the only entry point into PGlite
  const out = Buffer.from(await db.execProtocolRaw(new Uint8Array(buf), { syncToFs: false }))
  for (const m of split(out)) if (m.type === 'Z') sessionStatus = String.fromCharCode(m.buf[5])
  return out
}
async function execChunked(msgs) {
  const parts = []
  let cur = [], size = 0
  for (const m of msgs) {
    if (cur.length && size + m.length > CHUNK) { parts.push(await exec(Buffer.concat(cur))); cur = []; size = 0 }
    cur.push(m); size += m.length
  }
  if (cur.length) parts.push(await exec(Buffer.concat(cur)))
  return parts
}

const conns = new Set()                      // in round-robin order
let owner = null                             // the connection the session belongs to right now
let busy = false, nextId = 1
const schedule = () => setImmediate(pump)
async function pump() {
  if (busy) return
  busy = true
  try {
    for (;;) {
      if (!owner) {
        owner = [...conns].find((c) => c.queue.length) ?? null
        if (!owner) break
        conns.delete(owner); conns.add(owner)          // to the back of the line
      }
      const c = owner
      if (!c.queue.length) break                       // owner is inside a transaction: wait for it
      await c.process(c.queue.splice(0))
      if (c.closed) { if (!c.queue.length) { conns.delete(c); owner = null } }
      else if (c.atBoundary && sessionStatus === 'I') owner = null
    }
  } catch (e) {                              // PGlite itself failed: its state is unknown, so stop
    console.error('PGlite failed, exiting:', e)  // and let every client see the connection drop
    process.exit(1)
  } finally { busy = false }
}

class Conn {
  constructor(sock) {
    Object.assign(this, { id: nextId++, sock, inbuf: Buffer.alloc(0), started: false, queue: [],
      copy: null, atBoundary: true, closed: false, prepared: new Set(), waitSince: null })
    this.prefix = `c${this.id}_`
    sock.setNoDelay(true)
    sock.on('data', (d) => this.onData(d))
    sock.on('error', (e) => log(this.id, 'socket error', e.message))
    sock.on('close', () => this.onClose())
  }

  onData(d) {                                // (1) frame whole messages
    this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, d]) : d
    for (;;) {
      if (!this.started) {                   // untyped startup-phase packets: int32 length, int32 code
        if (this.inbuf.length < 8 || this.inbuf.length < this.inbuf.readInt32BE(0)) break
        const m = Buffer.from(this.inbuf.subarray(0, this.inbuf.readInt32BE(0)))
        this.inbuf = this.inbuf.subarray(m.length)
        const code = m.readInt32BE(4)
        if (code === SSL_REQUEST || code === GSS_REQUEST) { this.sock.write('N'); continue }
        if (code === CANCEL_REQUEST) { this.sock.end(); return } // no backend process to signal
        this.started = true
        this.queue.push({ type: 'startup', buf: m })
        continue
      }
      if (this.inbuf.length < 5 || this.inbuf.length < 1 + this.inbuf.readInt32BE(1)) break
      const m = Buffer.from(this.inbuf.subarray(0, 1 + this.inbuf.readInt32BE(1)))
      this.inbuf = this.inbuf.subarray(m.length)
      this.enqueue({ type: String.fromCharCode(m[0]), buf: m })
    }
    schedule()
  }

  enqueue(m) {
    if (this.copy) {                         // (2) inside COPY FROM STDIN: collect, submit at the end
      if (m.type === 'd') this.copy.push(m)
      else if (m.type === 'c' || m.type === 'f') {
        this.copy.push(m); this.queue.push({ type: 'copy', msgs: this.copy }); this.copy = null
      }
      return                                 // Flush/Sync inside COPY mean nothing to the backend
    }
    if (m.type === 'X') { this.sock.end(); return }
    if (m.type === 'Q' && this.startCopy(m)) return
    this.queue.push(this.rename(m))
  }

  // PGlite only runs COPY FROM STDIN when the query and all its data arrive in one call, but the
  // client sends no data until it sees CopyInResponse: answer that ourselves, collect the data.
  startCopy(m) {
    const sql = m.buf.toString('utf8', 5, m.buf.length - 1)
    const copy = /^\s*copy\s+[\s\S]*?\bfrom\s+stdin\b([\s\S]*)$/i.exec(sql)
    if (!copy) return false
    const binary = /\bbinary\b/i.test(copy[1])
    const cols = /^\s*copy\s+[^\s(]+\s*\(([^)]*)\)/i.exec(sql)
    const n = cols ? cols[1].split(',').length : 0
    const body = Buffer.alloc(3 + 2 * n)
    body[0] = binary ? 1 : 0; body.writeInt16BE(n, 1)
    for (let i = 0; i < n; i++) body.writeInt16BE(binary ? 1 : 0, 3 + 2 * i)
    this.sock.write(msg('G', body))
    this.copy = [m]
    return true
  }

  // (3) Every connection runs in the same session, and psycopg names its prepared statements
  // _pg3_0, _pg3_1, ... on every connection: prefix statement and portal names per connection.
  rename(m) {
    const b = m.buf, p = this.prefix
    const name = (o) => { const e = b.indexOf(0, o); return [b.toString('utf8', o, e), e + 1] }
    const pre = (n) => (n ? p + n : n)
    let body
    if (m.type === 'P') {                    // Parse: statement name first
      const [st, o] = name(5); if (!st) return m
      this.prepared.add(p + st); body = Buffer.concat([cstr(p + st), b.subarray(o)])
    } else if (m.type === 'B') {             // Bind: portal, then statement
      const [po, o1] = name(5); const [st, o2] = name(o1); if (!po && !st) return m
      body = Buffer.concat([cstr(pre(po)), cstr(pre(st)), b.subarray(o2)])
    } else if (m.type === 'E') {             // Execute: portal
      const [po, o] = name(5); if (!po) return m
      body = Buffer.concat([cstr(p + po), b.subarray(o)])
    } else if (m.type === 'D' || m.type === 'C') { // Describe/Close: kind byte, then name
      const [n] = name(6); if (!n) return m
      if (m.type === 'C' && b[5] === 0x53) this.prepared.delete(p + n)
      body = Buffer.concat([b.subarray(5, 6), cstr(p + n)])
    } else return m
    return { type: m.type, buf: msg(m.type, body) }
  }

  async process(batch) {
    const out = []
    let plain = []
    const flush = async () => { if (plain.length) out.push(...await execChunked(plain)); plain = [] }
    for (const it of batch) {
      if (it.type === 'startup') {
        await flush()
        let r = await exec(it.buf)
        // PGlite asks for a password; it accepts any, so answer for the client (no auth in tests).
        const first = split(r)[0]
        if (first?.type === 'R' && first.buf.readInt32BE(5) !== 0) r = await exec(msg('p', cstr('postgres')))
        out.push(r); this.atBoundary = true
      } else if (it.type === 'copy') {
        await flush()
        const r = split(await exec(Buffer.concat(it.msgs.map((x) => x.buf))))
        out.push(...r.filter((x) => x.type !== 'G').map((x) => x.buf)) // client has our CopyInResponse
        this.atBoundary = true
      } else if (it.type === 'close') {      // (4) the client went away: leave the session clean
        await flush()
        await exec(msg('S', Buffer.alloc(0))) // ends an unfinished extended-protocol sequence
        const sql = [...(sessionStatus === 'I' ? [] : ['ROLLBACK']), ...[...this.prepared].map((n) => `DEALLOCATE "${n}"`)]
        if (sql.length) await exec(msg('Q', cstr(sql.join('; '))))
        this.prepared.clear(); this.atBoundary = true
      } else {
        plain.push(it.buf); this.atBoundary = it.type === 'S' || it.type === 'Q'
      }
    }
    await flush()
    const res = Buffer.concat(out)
    if (DEBUG) log(this.id, batch.map((x) => x.type).join('').slice(-40), '->', split(res).map((x) => x.type).join('').slice(-40), sessionStatus)
    if (!this.closed && res.length) this.sock.write(res)
  }

  onClose() {
    log(this.id, 'closed; owner:', owner === this, 'status', sessionStatus)
    this.closed = true; this.copy = null
    if (!this.started) { conns.delete(this); return } // never touched the session
    this.queue = [{ type: 'close' }]         // runs when this connection next holds the session
    schedule()
  }

  // One transaction at a time: a connection waiting too long for a session held by another
  // connection's open transaction (e.g. one thread holding two connections) gets a FATAL error
  // instead of hanging the test until its timeout.
  waitCheck() {
    if (this.closed || owner === null || owner === this || !this.queue.length) { this.waitSince = null; return }
    this.waitSince ??= Date.now()
    if (Date.now() - this.waitSince <= WAIT_MS) return
    this.sock.write(fatal('55P03', `tsdb shim: waited ${WAIT_MS} ms for the single PGlite session;`
      + ` connection ${owner.id} holds an open transaction`))
    this.sock.end()
  }
}

setInterval(() => { for (const c of conns) c.waitCheck() }, 500).unref()
const server = net.createServer((sock) => { const c = new Conn(sock); conns.add(c); log(c.id, 'connected') })
server.on('error', (e) => { console.error('server error', e); process.exit(1) })
await new Promise((res) => server.listen(port, '127.0.0.1', res))
console.log(`READY port=${server.address().port} startup_ms=${Date.now() - t0} pid=${process.pid}`)

let stopping = false
async function shutdown(why) {
  if (stopping) return
  stopping = true
  log('stopping:', why)
  server.close()
  for (const c of conns) c.sock.destroy()
  while (busy) await new Promise((r) => setTimeout(r, 10))
  try { await db.close() } catch (e) { console.error('close error', e) }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
if (process.argv.includes('--exit-on-stdin-eof')) {
  process.stdin.on('end', () => shutdown('stdin closed')).on('error', () => shutdown('stdin error')).resume()
}
