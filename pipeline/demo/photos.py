"""The demo's evidence images: a camera's JPEG of the car with its plate, drawn with Pillow, served over
HTTPS with a certificate from a demo CA made on the spot (``make_ca``), which the fetcher is told to
trust (``PW_EVIDENCE_CA_FILE``). The image is a function of its URL (camera, time, plate), so the
simulator can put its SHA-256 in the camera event and the server needs no state. Tests use the same.
"""

import hashlib
import io
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import web
from PIL import Image, ImageDraw, ImageFont

FONT_FILE = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
PATH = "/e/{camera}/{stamp}/{plate}.jpg"


def photo_path(camera_id: str, taken_at: datetime, plate: str) -> str:
    return PATH.format(camera=quote(camera_id, safe=""), stamp=f"{taken_at.astimezone(UTC):%Y%m%d%H%M%S}",
                       plate=quote(plate, safe=""))


def _font(size: int):
    try:
        return ImageFont.truetype(str(FONT_FILE), size)
    except OSError:
        return ImageFont.load_default(size)


def car_photo(camera_id: str, stamp: str, plate: str, size: tuple[int, int] = (640, 400)) -> bytes:
    """A camera's capture as JPEG: a street, a car, its plate, the camera and time stamped in a corner.
    The same arguments give the same bytes."""
    w, h = size
    seed = int.from_bytes(hashlib.sha256(plate.encode()).digest()[:3], "big")
    body = (60 + seed % 150, 60 + (seed >> 8) % 150, 60 + (seed >> 16) % 150)
    im = Image.new("RGB", size, (120, 124, 128))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, h * 0.35], fill=(176, 200, 220))              # sky
    d.rectangle([0, h * 0.8, w, h], fill=(90, 90, 94))                  # kerb
    d.line([0, h * 0.92, w, h * 0.92], fill=(230, 230, 230), width=4)   # no-parking line
    d.rounded_rectangle([w * 0.12, h * 0.42, w * 0.88, h * 0.8], 24, fill=body)     # car body
    d.rounded_rectangle([w * 0.25, h * 0.25, w * 0.75, h * 0.48], 20, fill=body)    # cabin
    d.rectangle([w * 0.3, h * 0.29, w * 0.7, h * 0.45], fill=(40, 50, 60))          # rear window
    for x in (0.22, 0.78):
        d.ellipse([w * x - 38, h * 0.72, w * x + 38, h * 0.72 + 76], fill=(25, 25, 25))
    green = len(plate) == 8
    plate_box = [w * 0.36, h * 0.58, w * 0.64, h * 0.7]
    d.rectangle(plate_box, fill=(120, 200, 120) if green else (30, 70, 180), outline=(240, 240, 240), width=3)
    d.text(((plate_box[0] + plate_box[2]) / 2, (plate_box[1] + plate_box[3]) / 2), plate, anchor="mm",
           font=_font(int(h * 0.075)), fill=(10, 10, 10) if green else (250, 250, 250))
    d.rectangle([0, 0, w, 26], fill=(0, 0, 0))
    d.text((8, 4), f"{camera_id}  {stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}Z",
           font=_font(16), fill=(255, 255, 255))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=80)
    return out.getvalue()


def photo_for(camera_id: str, taken_at: datetime, plate: str) -> tuple[str, str]:
    """(path, SHA-256) of the demo's capture of ``plate`` by ``camera_id`` at ``taken_at``."""
    path = photo_path(camera_id, taken_at, plate)
    return path, hashlib.sha256(car_photo(camera_id, f"{taken_at.astimezone(UTC):%Y%m%d%H%M%S}", plate)).hexdigest()


@dataclass(frozen=True)
class DemoTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_ca(directory: Path, host: str = "localhost") -> DemoTLS:
    """A demo CA and a server certificate it signs for ``host``, 127.0.0.1 and ::1 (PEM files in ``directory``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parkwarden demo evidence CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = DemoTLS(directory / "demo-ca.pem", directory / "evidence-server.pem", directory / "evidence-server.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    tls.key_file.chmod(0o600)
    return tls


def demo_tls(directory: Path) -> DemoTLS:
    """The demo CA and server certificate in ``directory``, made if missing."""
    tls = DemoTLS(directory / "demo-ca.pem", directory / "evidence-server.pem", directory / "evidence-server.key")
    return tls if all(f.exists() for f in (tls.ca_file, tls.cert_file, tls.key_file)) else make_ca(directory)


def server_tls(tls: DemoTLS):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def app(extra_routes=()) -> web.Application:
    """The demo's image server: ``GET /e/<camera>/<yyyymmddHHMMSS>/<plate>.jpg``."""
    async def photo(request: web.Request) -> web.Response:
        stamp = request.match_info["stamp"]
        if len(stamp) != 14 or not stamp.isdigit():
            raise web.HTTPNotFound()
        body = car_photo(unquote(request.match_info["camera"]), stamp, unquote(request.match_info["plate"]))
        return web.Response(body=body, content_type="image/jpeg")

    application = web.Application()
    application.router.add_get("/e/{camera}/{stamp}/{plate}.jpg", photo)
    for method, path, handler in extra_routes:
        application.router.add_route(method, path, handler)
    return application


async def serve(tls: DemoTLS, host: str, port: int, extra_routes=()) -> web.AppRunner:
    """Start the image server over HTTPS; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(app(extra_routes), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=server_tls(tls)).start()
    return runner
