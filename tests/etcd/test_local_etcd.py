import socket
from pathlib import Path

from devtools.local_etcd import LocalEtcd


def test_local_etcd_starts_healthy_and_restarts(etcd: LocalEtcd) -> None:
    assert etcd.healthy()
    etcd.kill()
    assert not etcd.healthy()
    etcd.restart()
    assert etcd.healthy()


def test_a_port_taken_before_etcd_binds_it_starts_on_other_ports(tmp_path: Path) -> None:
    # Another process binds the client port between picking and etcd's start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = LocalEtcd(data_dir=tmp_path / "etcd", tls=True, client_port=taken).start()
        try:
            assert server.client_port != taken
            assert server.healthy()
            assert server.log_path is not None
            assert b"address already in use" in server.log_path.read_bytes()
        finally:
            server.stop()
