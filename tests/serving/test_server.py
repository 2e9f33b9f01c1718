"""Lifecycle through a real server: health (overall, per model), reflection, graceful stop, hot reload, mTLS."""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.server import SERVICE_NAME, health_service_name
from tests.serving.conftest import ServerThread, make_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", SERVICE_NAME, health_service_name("gauss"), health_service_name("gauss-gan")])
def test_health_is_serving_overall_and_per_loaded_model(server: ServerThread, service: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == SERVING


def test_health_does_not_know_refused_models(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=health_service_name("broken")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_synthesizer_and_health_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"synthserve.v1.Synthesizer", "grpc.health.v1.Health"} <= names


def test_graceful_stop_finishes_in_flight_requests_and_refuses_new_ones(store: Path) -> None:
    # Batches wait 1 s, so the request below is still in flight when the stop begins.
    running = ServerThread(make_config(store, max_queue_delay_s=1.0, early_dispatch=False))
    with grpc.insecure_channel(running.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        in_flight = stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=10, seed=1))
        time.sleep(0.2)
        stopper = threading.Thread(target=running.stop, kwargs={"grace_s": 5.0})
        stopper.start()
        time.sleep(0.2)
        check = running.call(running.server.health.Check(health_pb2.HealthCheckRequest(service=""), None))
        assert check.status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model="gauss", num_rows=1, seed=2), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert in_flight.result(timeout=5).rows.num_rows == 10
        stopper.join(timeout=10)
    assert not stopper.is_alive()


def _certificate(
    name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[bytes, bytes, x509.Name, ec.EllipticCurvePrivateKey]:
    """A PEM certificate for `name` (a CA when `issuer` is None) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem, subject, key


def test_mutual_tls_serves_clients_with_a_certificate_and_refuses_others(store: Path, tmp_path: Path) -> None:
    ca_pem, _, ca_name, ca_key = _certificate("synthserve test CA")
    server_pem, server_key, _, _ = _certificate("localhost", (ca_name, ca_key))
    client_pem, client_key, _, _ = _certificate("client", (ca_name, ca_key))
    for name, data in {"ca.pem": ca_pem, "server.pem": server_pem, "server.key": server_key}.items():
        (tmp_path / name).write_bytes(data)
    config = dataclasses.replace(
        make_config(store),
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
    )
    running = ServerThread(config)
    options = [("grpc.ssl_target_name_override", "localhost")]
    try:
        with_client_cert = grpc.ssl_channel_credentials(ca_pem, private_key=client_key, certificate_chain=client_pem)
        with grpc.secure_channel(running.target, with_client_cert, options=options) as channel:
            response = pb_grpc.SynthesizerStub(channel).Sample(pb.SampleRequest(model="gauss", num_rows=2, seed=1))
        assert response.rows.num_rows == 2
        without_client_cert = grpc.ssl_channel_credentials(ca_pem)
        with (
            grpc.secure_channel(running.target, without_client_cert, options=options) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            pb_grpc.SynthesizerStub(channel).Sample(pb.SampleRequest(model="gauss", num_rows=2), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails without a client certificate
        with grpc.insecure_channel(running.target) as channel, pytest.raises(grpc.RpcError):
            pb_grpc.SynthesizerStub(channel).Sample(pb.SampleRequest(model="gauss", num_rows=2), timeout=5)
    finally:
        running.stop()


def test_reload_serves_new_versions_reuses_loaded_ones_and_drops_removed_models(store: Path, tmp_path: Path) -> None:
    live = tmp_path / "store"
    shutil.copytree(store / "gauss" / "1", live / "gauss" / "1")
    shutil.copytree(store / "gauss-gan", live / "gauss-gan")
    running = ServerThread(dataclasses.replace(make_config(live), reload_interval_s=0))
    try:
        before = running.server.engine.registry
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=1, seed=1)).version == 1
            shutil.copytree(store / "gauss" / "2", live / "gauss" / "2")
            shutil.rmtree(live / "gauss-gan")
            after = running.call(running.server.reload())
            assert after.get("gauss", 1) is before.get("gauss", 1)  # unchanged versions are not reloaded
            assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=1, seed=1)).version == 2
            with pytest.raises(grpc.RpcError) as info:
                stub.Sample(pb.SampleRequest(model="gauss-gan", num_rows=1))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            health = health_pb2_grpc.HealthStub(channel)
            gone = health.Check(health_pb2.HealthCheckRequest(service=health_service_name("gauss-gan")))
            assert gone.status == NOT_SERVING
    finally:
        running.stop()
