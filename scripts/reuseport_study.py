"""What a SO_REUSEPORT listener's close does to connections queued on it (takeover study).
   mode close: A closes its listener with connections queued; B (same port) accepts the rest.
   mode pass: A hands its listener to B over SCM_RIGHTS first, then closes its copy."""
import os, socket, sys, time, array
mode = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 400
def lsock(port=0):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port)); s.listen(4096); return s
la = lsock(); port = la.getsockname()[1]; lb = lsock(port)
clients = []
for i in range(n):
    c = socket.socket(); c.connect(("127.0.0.1", port)); clients.append(c)
time.sleep(0.1)
extra = []
if mode == "pass":
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [la.fileno()]))])
    msg, anc, _, _ = b.recvmsg(1, socket.CMSG_LEN(4))
    fd = array.array("i", anc[0][2])[0]
    extra.append(socket.socket(fileno=fd))
la.close()  # A goes away
served = 0
for s in [lb] + extra:
    s.setblocking(False)
    while True:
        try:
            c, _ = s.accept(); c.sendall(b"y"); c.close(); served += 1
        except BlockingIOError:
            break
reset = ok = 0
for c in clients:
    c.settimeout(1)
    try:
        d = c.recv(1); ok += d == b"y"; reset += d != b"y"
    except (ConnectionResetError, socket.timeout):
        reset += 1
print(f"mode={mode} migrate_req={open('/proc/sys/net/ipv4/tcp_migrate_req').read().strip()} "
      f"connections={n} served={served} ok={ok} reset_or_lost={reset}")
