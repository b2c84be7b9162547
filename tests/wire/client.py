"""Drives every RPC of a running lb with stubs generated from rollout_lb.proto (docs/contract.md's wire table).

Usage: client.py --lb HOST:PORT --backend IP:PORT --stubs DIR [--connect-timeout SECS]
--backend must answer GET /healthz with `ok` ([::1]:PORT for IPv6). Uses the pools /wire/ and
/nope/, which must not exist yet, and leaves the lb as it found it.
Prints 'N passed, N failed' last; exits 0 when all passed, 1 on a failed check, 2 when the lb
cannot be reached.
"""
import argparse
import sys

import grpc

parser = argparse.ArgumentParser()
parser.add_argument("--lb", required=True)
parser.add_argument("--backend", required=True, help="a backend answering /healthz with ok")
parser.add_argument("--stubs", required=True, help="directory holding rollout_lb_pb2*.py")
parser.add_argument("--connect-timeout", type=float, default=10.0)
args = parser.parse_args()
sys.path.insert(0, args.stubs)
import rollout_lb_pb2 as pb  # noqa: E402
import rollout_lb_pb2_grpc as pb_grpc  # noqa: E402

channel = grpc.insecure_channel(args.lb)
try:
    grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
except grpc.FutureTimeoutError:
    print(f"cannot connect to lb at {args.lb} (no answer within {args.connect_timeout:g}s)", file=sys.stderr)
    print("wire: 0 passed, 1 failed")
    sys.exit(2)
stub = pb_grpc.LoadBalancerStub(channel)
host, _, port = args.backend.rpartition(":")
if not host or not port.isdigit():
    parser.error(f"--backend {args.backend!r} is not IP:PORT")
ip = host[1:-1] if host.startswith("[") and host.endswith("]") else host
backend = pb.Backend(ip_backend=pb.IPBackend(ip=ip, port=int(port), url_path="/"))
checks = pb.HealthChecks(
    health_checks=[pb.HealthCheck(status_check=pb.StatusCheck(url_path="/healthz", healthy_values=["ok", "OK"]))],
    interval_secs=10,
)
passed = failed = 0


def check(name, fn, code=None):
    global passed, failed
    try:
        result = fn()
        if code is not None:
            raise AssertionError(f"expected {code.name}, got success")
        print(f"ok   {name}")
        passed += 1
        return result
    except grpc.RpcError as e:
        if code is not None and e.code() == code:
            print(f"ok   {name} ({code.name}: {e.details()})")
            passed += 1
        else:
            print(f"FAIL {name}: {e.code().name}: {e.details()}")
            failed += 1
    except AssertionError as e:
        print(f"FAIL {name}: {e}")
        failed += 1


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


P = "/wire/"
check("AddPool", lambda: stub.AddPool(pb.AddPoolReq(pattern=P, pool_type=pb.PT_P2C, health_checks=checks)))
check("AddPool duplicate", lambda: stub.AddPool(pb.AddPoolReq(pattern=P, pool_type=pb.PT_P2C, health_checks=checks)), grpc.StatusCode.ALREADY_EXISTS)
check("AddPool empty pattern", lambda: stub.AddPool(pb.AddPoolReq(pattern="", pool_type=pb.PT_P2C, health_checks=checks)), grpc.StatusCode.INVALID_ARGUMENT)
check("AddPool PT_UNKNOWN", lambda: stub.AddPool(pb.AddPoolReq(pattern="/x/", pool_type=pb.PT_UNKNOWN, health_checks=checks)), grpc.StatusCode.INVALID_ARGUMENT)
check("PoolHealth empty pool", lambda: expect(stub.PoolHealth(pb.PoolHealthReq(pattern=P, healthy=True, sick=True)).health.status == pb.PS_EMPTY, "want PS_EMPTY"))
check("AddBackend", lambda: stub.AddBackend(pb.AddBackendReq(pattern=P, backend=backend)))
check("AddBackend duplicate", lambda: stub.AddBackend(pb.AddBackendReq(pattern=P, backend=backend)), grpc.StatusCode.ALREADY_EXISTS)
check("AddBackend unknown pool", lambda: stub.AddBackend(pb.AddBackendReq(pattern="/nope/", backend=backend)), grpc.StatusCode.NOT_FOUND)
check("AddBackend missing oneof", lambda: stub.AddBackend(pb.AddBackendReq(pattern=P)), grpc.StatusCode.INVALID_ARGUMENT)


def full_health():
    health = stub.PoolHealth(pb.PoolHealthReq(pattern=P, healthy=True, sick=True)).health
    expect(health.status == pb.PS_FULL, f"want PS_FULL, got {pb.PoolStatus.Name(health.status)}")
    expect(len(health.backends) == 1, "want one backend")
    b = health.backends[0]
    expect(b.status == pb.BS_HEALTHY, "want BS_HEALTHY")
    expect(b.backend.ip_backend.ip == ip and b.backend.ip_backend.port == int(port), "wrong backend")


check("PoolHealth after AddBackend", full_health)
check("PoolHealth sick only", lambda: expect(len(stub.PoolHealth(pb.PoolHealthReq(pattern=P, sick=True)).health.backends) == 0, "no sick backends"))
check("PoolHealth healthy only", lambda: expect(len(stub.PoolHealth(pb.PoolHealthReq(pattern=P, healthy=True)).health.backends) == 1, "one healthy backend"))
check("PoolHealth neither flag", lambda: expect(len(stub.PoolHealth(pb.PoolHealthReq(pattern=P)).health.backends) == 0, "no backends listed"))
check("PoolHealth empty pattern", lambda: stub.PoolHealth(pb.PoolHealthReq(pattern="", healthy=True)), grpc.StatusCode.INVALID_ARGUMENT)
check("RemoveBackend", lambda: stub.RemoveBackend(pb.RemoveBackendReq(pattern=P, backend=backend)))
check("RemoveBackend again", lambda: stub.RemoveBackend(pb.RemoveBackendReq(pattern=P, backend=backend)), grpc.StatusCode.NOT_FOUND)
check("RemovePool", lambda: stub.RemovePool(pb.RemovePoolReq(pattern=P)))
check("RemovePool again", lambda: stub.RemovePool(pb.RemovePoolReq(pattern=P)), grpc.StatusCode.NOT_FOUND)
check("PoolHealth unknown pool", lambda: stub.PoolHealth(pb.PoolHealthReq(pattern=P, healthy=True)), grpc.StatusCode.NOT_FOUND)

print(f"wire: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
