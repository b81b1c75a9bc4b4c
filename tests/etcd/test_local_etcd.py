from devtools.local_etcd import LocalEtcd


def test_local_etcd_starts_healthy_and_restarts(etcd: LocalEtcd) -> None:
    assert etcd.healthy()
    etcd.kill()
    assert not etcd.healthy()
    etcd.restart()
    assert etcd.healthy()
