#!/usr/bin/env bash
# Installs the Debian packages the integration tests start: GStreamer's RTSP server (run under
# Debian's own python3, which python3-gi is built for), Prometheus with promtool, systemd-analyze,
# the mosquitto MQTT broker, and Chromium with its driver for the review page's browser tests.
# Without root it only reports what is missing; the tests that need it then skip with a reason.
set -euo pipefail
packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
          gstreamer1.0-plugins-ugly prometheus systemd mosquitto chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "system packages missing (need root to install): ${missing[*]}" >&2
  echo "tests that need them will be skipped with a reason" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
