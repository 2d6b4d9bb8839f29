"""The edge's TLS, graded by an independent scanner: sslyze against Mozilla's "intermediate"
profile (the one sslyze ships, 5.7), over the network as any client would see it.

Caddy's internal root is handed to sslyze as a custom trust store (CertificateInfoExtraArgument),
so the certificate checks run for real against it: path validation, key type and curve,
signature, lifespan, and the name. What an internal CA cannot pass is asserted for what it is: no
public store sslyze carries trusts it (a deployment with ACME gets a publicly trusted chain).
"""

import pytest
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.scanner.models import (
    ScanCommandsExtraArguments,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)
from sslyze.scanner.scanner import Scanner
from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

from tests.integration.stack import Stack


@pytest.fixture(scope="module")
def scan(stack: Stack) -> ServerScanResult:
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("localhost", stack.https_port, "127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication="localhost"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=stack.ca_file)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = scanner.get_results()
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    return result


def test_edge_meets_mozilla_intermediate(scan: ServerScanResult) -> None:
    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(scan, profile)
    except ServerNotCompliantWithTlsConfiguration as failed:
        pytest.fail(f"not Mozilla intermediate: {failed.issues}")


def test_certificate_is_trusted_through_caddys_root_only(scan: ServerScanResult) -> None:
    assert scan.scan_result is not None
    certificate_info = scan.scan_result.certificate_info.result
    assert certificate_info is not None
    assert certificate_info.certificate_deployments
    for deployment in certificate_info.certificate_deployments:
        # Validation checks the chain and the name: "localhost", the SNI sslyze sent.
        trusted_by = {
            result.trust_store.name
            for result in deployment.path_validation_results
            if result.was_validation_successful
        }
        assert trusted_by == {"Supplied CA file"}, trusted_by  # sslyze's name for custom_ca_file
