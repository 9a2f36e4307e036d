"""How much work each mode of the suite does; every loop of the suite is bounded by these counts and times."""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS = ("connections", "throughput", "disruption", "scale")

SCENARIOS = ("vip_controller", "vip_switch", "vip_switch_learn", "direct", "haproxy")
SUBJECTS = ("vip_controller", "vip_switch", "vip_switch_learn")
BASELINES = ("direct", "haproxy")
CHANGES = ("add", "weight", "drain", "remove")


@dataclass(frozen=True)
class Settings:
    """The load of one mode; every scenario of a section runs exactly this."""

    repeats: int  # rounds of the connections and throughput scenarios; figures are medians over them
    clients: int  # client hosts generating load in parallel
    count: int  # connections per client in the loaded run
    concurrency: int  # connections in flight per client in the loaded run
    run_timeout: float  # bound on every connections run, in seconds
    warmup_count: int  # connections per client before measuring a scenario (0: no warm-up)
    idle_count: int  # connections of the one-in-flight latency run (first client only)
    download_bytes: int  # size of the bulk download (first client only)
    download_timeout: float  # bound on the bulk download, in seconds
    disruption_downloads: int  # long downloads per client and VIP in each disruption trial
    disruption_bytes: int  # size of each of those downloads
    disruption_rate: int  # their rate in bytes per second (the backend paces them)
    tracked: tuple[int, int]  # tracked connections at which controller memory is read (ascending)
    allotment_endpoints: int  # endpoints of the allotment recomputation figure
    allotment_calls: int  # timed calls of compute_allotment (and of the baseline)
    vips: int  # VIPs added through REST for the many-VIP figure
    profile: bool = True  # one more loaded run through the controller-dispatched VIP with py-spy on the controller


FULL = Settings(
    repeats=3,
    clients=4,
    count=2000,
    concurrency=8,
    run_timeout=30.0,
    warmup_count=10,
    idle_count=300,
    download_bytes=200_000_000,
    download_timeout=20.0,
    disruption_downloads=8,
    disruption_bytes=2_000_000,
    disruption_rate=400_000,
    tracked=(10_000, 100_000),
    allotment_endpoints=1000,
    allotment_calls=200,
    vips=100,
)
QUICK = Settings(
    repeats=1,
    clients=4,
    count=300,
    concurrency=8,
    run_timeout=10.0,
    warmup_count=10,
    idle_count=100,
    download_bytes=20_000_000,
    download_timeout=5.0,
    disruption_downloads=4,
    disruption_bytes=600_000,
    disruption_rate=200_000,
    tracked=(2_000, 10_000),
    allotment_endpoints=1000,
    allotment_calls=50,
    vips=100,
)
SMOKE = Settings(
    repeats=1,
    clients=2,
    count=40,
    concurrency=8,
    run_timeout=5.0,
    warmup_count=0,
    idle_count=20,
    download_bytes=2_000_000,
    download_timeout=3.0,
    disruption_downloads=2,
    disruption_bytes=150_000,
    disruption_rate=100_000,
    tracked=(500, 2_000),
    allotment_endpoints=1000,
    allotment_calls=10,
    vips=5,
    profile=False,
)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
