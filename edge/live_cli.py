"""``edge-denoise file`` and ``edge-denoise live``. Imports stay lazy so ``--help`` is fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge.cliutil import Number, err_console, param_type

MODEL_HELP = "Model .tflite (with its .json beside it). Default: the shipped edge/models/default."


@click.command("file")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model_path", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--bypass", is_flag=True, help="Skip the mask (same path and latency): A/B check.")
@click.option("--threads", default=1, show_default=True, type=Number(int, 1, 16),
              help="Interpreter threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def file_command(src, dst, model_path, bypass, threads, as_json) -> None:
    """Denoise an audio file with the streaming path, one 10 ms hop at a time.

    The output has the input's rate, channels and length (latency compensated); above 16 kHz
    the upper band is kept with the gain extended from the model's mask. WAV, FLAC or OGG by
    suffix. Prints the real-time factor (processing time / audio time).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edge.denoise import check_file_job, denoise_file
    from edge.model import StepModel

    check_file_job(src, dst)  # a bad path fails before the model (and LiteRT's log) loads
    model = StepModel(model_path, num_threads=threads, isolate=model_path is not None)
    bar = Progress(TextColumn("denoising"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeRemainingColumn(), console=err_console, transient=True)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            if done >= total:  # short file: finished before the first report, no bar
                return
            bar.start()  # started lazily so input errors print without a bar around them
            task = bar.add_task("denoise", total=total)
        bar.update(task, completed=done, total=total)

    try:
        out = denoise_file(src, dst, model, progress=progress, bypass=bypass)
    finally:
        if task is not None:
            bar.stop()
    out["model"] = model.describe()
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"{dst}: {out['seconds']:.2f} s at {out['sample_rate']} Hz denoised in "
                   f"{out['wall_s']:.2f} s (real-time factor {out['rtf']:.4f}, "
                   f"model {model.metadata.name} on {model.backend})")


@click.command("live")
@click.option("--duration", "-d", type=Number(float, lo=0.1),
              help="Stop after this many seconds of audio (default: until Ctrl-C/SIGTERM).")
@click.option("--device", "-D", help="Input device (PortAudio name substring or index). "
              "Default: the profile's input_device.")
@click.option("--output-device", help="Output device for playback. Default: the profile's.")
@click.option("--list-devices", is_flag=True, help="List audio devices and exit.")
@click.option("--print-unit", is_flag=True,
              help="Print a systemd unit for this profile (user, group, CPU hints) and exit.")
@click.option("--profile", "-p", "profile_name", default="generic-linux", show_default=True,
              help="Hardware profile name or .toml path (rates, periods, affinity).")
@click.option("--model", "-m", "model_path", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Run the flashed bundle of this slot store (serve's --state-dir) and follow "
              "its switches live; the packaged model when none is installed. Writes live.json.")
@click.option("--rate", type=int, help="Capture rate in Hz (default: the profile's native_rate,"
              " or the device's own when it refuses that).")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Write the denoised audio to this .wav/.flac (progressively).")
@click.option("--record-input", type=click.Path(dir_okay=False),
              help="Also write the captured (noisy) audio to this .wav/.flac, at the capture rate.")
@click.option("--play/--no-play", default=None,
              help="Play to the output device (default: on unless --record is given).")
@click.option("--bypass", is_flag=True, help="Start in bypass (SIGUSR1 toggles at runtime).")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Also write the JSON summary to this file.")
@click.option("--resample-quality", type=click.Choice(["MP", "QQ", "LQ", "MQ", "HQ", "VHQ"]),
              default="MP", show_default=True,
              help="Native <-> 16 kHz resampling. MP: minimum-phase FIR, ~0.2 ms each way "
              "(48/32 kHz; soxr LQ for other rates); the soxr qualities cost latency "
              "(LQ ~6 ms, HQ ~21 ms each way).")
@click.option("--stream", metavar="URL",
              help="Also send the denoised stream over RTP/Opus: udp://HOST:PORT or tcp://HOST:PORT.")
@click.option("--bitrate", default=64, show_default=True, type=param_type("bitrate_kbps"),
              help="With --stream: bitrate on the wire, kbit/s (50-200).")
@click.option("--buffer", default=200, show_default=True, type=param_type("buffer_ms"),
              help="With --stream: the receiver's jitter-buffer bound, ms (100-500).")
@click.option("--share", default=1.0, show_default=True, type=param_type("share"),
              help="With --stream: share of the link capacity for this stream, (0, 1].")
@click.option("--telemetry", "telemetry_path", type=click.Path(dir_okay=False),
              help="With --stream: append the receiver's per-second telemetry here (JSON lines).")
@click.option("--fix-faults", "fault_events", metavar="EVENTS.jsonl", default=None,
              help="Detect faults (hum, clipping, dropouts ...) in the capture and in what the "
                   "denoiser removes, repair and mix them out, and log each event (with its "
                   "source) to this JSON-lines file.")
@click.option("--ptp-lock", is_flag=True,
              help="Stamp captured blocks with PTP-disciplined time (CLOCK_REALTIME under "
                   "phc2sys) and resample so the stream follows PTP time, not the card's crystal.")
@click.option("--metrics", "metrics_addr", metavar="ADDR:PORT",
              help="Serve Prometheus metrics (loop, stream link, PTP clock) on "
                   "http://ADDR:PORT/metrics, e.g. 127.0.0.1:9108.")
@click.option("--quiet", "-q", is_flag=True, help="No live status line.")
def live_command(duration, device, output_device, list_devices, print_unit, profile_name,
                 model_path, state_dir, rate, record, record_input, play, bypass, summary_path,
                 resample_quality, stream, bitrate, buffer, share, telemetry_path,
                 fault_events, ptp_lock, metrics_addr, quiet) -> None:
    """Capture, denoise and play or record live audio.

    The audio callback only queues blocks; a worker resamples to 16 kHz (soxr, streaming),
    denoises hop by hop and resamples back. SIGINT/SIGTERM stop cleanly (files keep valid
    headers), SIGUSR1 toggles bypass for A/B listening. Prints a JSON summary at exit and
    exits 1 if the device disappears. Status line (stderr): audio seconds, mode, overruns,
    underruns, queue depth/max, model hop p50/p99/max ms, whole-loop p99 ms per hop.
    With --state-dir a flashed bundle switch is hot-reloaded between two blocks.
    """
    if list_devices:
        from edge.sources import list_devices as table

        click.echo(table())
        return
    if print_unit:
        import shutil

        from edge.live import systemd_unit
        from edge.profile import DeviceProfile

        exe = shutil.which("edge-denoise") or "/usr/local/bin/edge-denoise"
        click.echo(systemd_unit(DeviceProfile.by_name(profile_name), exe), nl=False)
        return
    if model_path and state_dir:
        raise click.UsageError("--model and --state-dir exclude each other (--state-dir runs "
                               "the flashed bundle)")
    if telemetry_path and not stream:
        raise click.UsageError("--telemetry needs --stream")
    from edge.live import startup_toggles
    from edge.outpaths import check_output

    for path, what in ((record, "recording"), (record_input, "input recording"),
                       (summary_path, "summary"), (telemetry_path, "telemetry log"),
                       (fault_events, "fault-event log")):
        check_output(path, what)  # before the model loads and the audio starts
    with startup_toggles() as pending:  # SIGUSR1 while starting toggles, never kills
        summary = _live(duration, device, output_device, profile_name, model_path, state_dir,
                        rate, record, record_input, play, bypass, resample_quality, stream,
                        bitrate, buffer, share, telemetry_path, fault_events, ptp_lock, quiet,
                        pending, metrics_addr)
    text = json.dumps(summary, indent=1)
    click.echo(text)
    if summary_path:
        Path(summary_path).write_text(text + "\n")
    if summary["error"]:
        err_console.print(f"Error: {summary['error']}"
                          + (f" (partial recording kept: {record})" if record else ""))
        sys.exit(1)


def _live(duration, device, output_device, profile_name, model_path, state_dir, rate, record,
          record_input, play, bypass, resample_quality, stream, bitrate, buffer, share,
          telemetry_path, fault_events, ptp_lock, quiet, pending, metrics_addr) -> dict:
    extra = []
    if stream:
        from edge.transport.links import parse_url, resolve

        resolve(parse_url(stream)[1])  # an unknown host is an error now
        extra.append(network_sink(stream, bitrate, buffer, share, telemetry_path))
    ctx = click.get_current_context()
    pinned = frozenset(key for opt, key in (("bitrate", "bitrate_kbps"), ("buffer", "buffer_ms"),
                                            ("share", "share"))
                       if ctx.get_parameter_source(opt).name in ("COMMANDLINE", "ENVIRONMENT"))
    return run_live(duration=duration, device=device, output_device=output_device,
                    profile_name=profile_name, model_path=model_path, rate=rate,
                    record=record, record_input=record_input,
                    play=play if play is not None or not stream else False, bypass=bypass,
                    resample_quality=resample_quality, quiet=quiet, extra_sinks=extra,
                    fault_events=fault_events, ptp_lock=ptp_lock, state_dir=state_dir,
                    transport_pinned=pinned, pending_toggles=pending, metrics=metrics_addr)


def run_live(duration=None, device=None, output_device=None, profile_name="generic-linux",
             model_path=None, rate=None, record=None, record_input=None, play=None,
             bypass=False, resample_quality="MP", quiet=True, extra_sinks=(),
             fault_events=None, ptp_lock=False, state_dir=None,
             transport_pinned=frozenset(), pending_toggles=None, metrics=None,
             source=None) -> dict:
    """The ``live`` command as a function (also used by the benchmark); returns the summary.

    ``extra_sinks``: more Sink objects (e.g. the network sender's CallbackSink).
    ``fault_events``: a JSON-lines path; turns on the fault monitor and mixer after the model.
    ``state_dir``: run the slot store's active bundle and follow its switches
    (edge/liveslot.py); ``transport_pinned``: sender parameters a bundle may not change.
    ``pending_toggles``: SIGUSR1s caught during start-up (edge.live.startup_toggles).
    ``metrics``: "ADDR:PORT" of a Prometheus endpoint for the loop, link and clock.
    ``source``: capture from this Source object (edge.sources) instead of a device.
    ``ptp_lock`` without a locked PTP clock warns and runs on the card's clock: CLOCK_REALTIME
    alone is no reference, and its "rate error" (hundreds of ppm) would be noise.
    """
    from rich.live import Live

    from edge.denoise import Denoiser
    from edge.live import LiveLoop, LoopConfig, signal_handlers
    from edge.model import StepModel
    from edge.profile import DeviceProfile
    from edge.sinks import NullSink, PlaybackSink, RecordSink
    from edge.sources import SoundDeviceSource, negotiate_rate, parse_device

    prof = DeviceProfile.by_name(profile_name)
    a, r = prof.audio, prof.runtime
    in_dev = parse_device(device if device is not None else a.input_device)
    if source is not None:
        capture_rate, period = source.rate, source.period
    else:
        capture_rate = negotiate_rate(in_dev, rate or a.native_rate, "input")
        period = max(16, round(a.period_frames * capture_rate / a.native_rate))
    isolate = model_path is not None and not state_dir  # a --model from outside
    active = None
    if state_dir:
        from edge.liveslot import describe, resolve

        active = resolve(state_dir)
        model_path = active.path
        err_console.print(f"edge-denoise live: running {describe(active)}")
    model = StepModel(model_path, num_threads=r.num_threads, isolate=isolate)
    sinks = list(extra_sinks)
    if record:
        sinks.append(RecordSink(record, capture_rate))
    if play if play is not None else not record:
        out_dev = parse_device(output_device if output_device is not None else a.output_device)
        sinks.append(PlaybackSink(out_dev, negotiate_rate(out_dev, capture_rate, "output"),
                                  period))
    if not sinks:
        sinks.append(NullSink())
    if source is None:
        source = SoundDeviceSource(in_dev, capture_rate, period, channels=a.channels,
                                   input_channel=a.input_channel)
    cfg = LoopConfig(duration_s=duration, queue_blocks=r.queue_frames,
                     cpu_affinity=r.cpu_affinity, realtime_priority=r.realtime_priority,
                     resample_quality=resample_quality)
    inputs = [RecordSink(record_input, capture_rate)] if record_input else []
    fixer = None
    if fault_events:
        from edge.faults.live import LiveFaultFixer

        fixer = LiveFaultFixer(fault_events, delay_samples=model.front_end.overlap)
    media = None
    ptp_off = None
    if ptp_lock:
        from edge.clock.cli import lock_problem

        ptp_off = lock_problem()
        if ptp_off:
            err_console.print(f"edge-denoise live: warning: --ptp-lock ignored: {ptp_off}; "
                              "the stream follows the sound card's clock")
    if ptp_lock and not ptp_off:
        from edge.clock.mediaclock import PtpLockedStream

        media = PtpLockedStream(capture_rate)
    loop = LiveLoop(source, Denoiser(model, bypass=bypass), sinks, cfg, input_sinks=inputs,
                    post=fixer, media_clock=media, pre=fixer.pre if fixer else None)
    follower = None
    if active is not None:
        from edge.liveslot import SlotFollower

        loop.model_info = active.info(model.metadata.name, model.metadata.version)
        senders = [s.sender for s in sinks if getattr(s, "sender", None) is not None]
        follower = SlotFollower(state_dir, loop, active, profile=prof,
                                num_threads=r.num_threads, senders=senders,
                                transport_base=senders[0].params if senders else None,
                                pinned=transport_pinned,
                                log=lambda msg: err_console.print(f"edge-denoise live: {msg}"))
    server = None
    if metrics:
        from edge.clock.cli import read_status
        from edge.metrics import Collector, serve

        senders = [s.sender for s in sinks if getattr(s, "sender", None) is not None]
        server = serve(metrics, Collector(loop, senders=senders,
                                          telemetry=senders[0].telemetry if senders else None,
                                          clock=lambda: read_status(None)))
        err_console.print(f"edge-denoise live: metrics on http://{metrics.rpartition(':')[0]}"
                          f":{server.server_port}/metrics")
    status = Live("", console=err_console, transient=False, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False)

    def on_status(lp):
        if follower is not None:
            follower.poll()
        if not quiet:
            status.update(lp.stats.status_line(lp.audio_s, lp.denoiser.bypass), refresh=True)

    try:
        with signal_handlers(loop, pending=pending_toggles), \
                status if not quiet else _nothing():
            summary = loop.run(on_status)
    finally:
        if follower is not None:
            follower.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    if fixer is not None:
        fixer.flush()
        summary["fault_events"] = fixer.events
        summary["fault_repairs"] = dict(fixer.repair.counts)
        summary["fault_events_rejected"] = fixer.rejected  # by the pre-check / measurement
    if ptp_off:
        summary["ptp_lock"] = f"off: {ptp_off}"
    summary.update(model={**loop.denoiser.model.describe(), **(loop.model_info or {})},
                   profile=prof.name, record=record, record_input=record_input,
                   input_device=getattr(source, "what", None)
                   or str(in_dev if in_dev is not None else "default"))
    if follower is not None:
        summary.update(state_dir=str(state_dir), note=follower.running.note,
                       hop_budget_ms=follower.budget_ms(), window=loop.stats.window(),
                       transport=follower.transport.to_dict() if follower.transport else None)
    return summary


def network_sink(url: str, bitrate: int, buffer: int, share: float, telemetry_path=None):
    """The RTP/Opus sender as a loop sink at 16 kHz (the loop resamples to the sink's rate)."""
    from edge.params import TransportParams
    from edge.sinks import CallbackSink
    from edge.transport.links import parse_url
    from edge.transport.sender import NetworkSink
    from edge.transport.telemetry import TelemetryLog

    params = TransportParams(bitrate_kbps=bitrate, protocol=parse_url(url)[0], buffer_ms=buffer,
                             share=share)
    log = TelemetryLog(telemetry_path) if telemetry_path else TelemetryLog()
    sender = NetworkSink(url, params, telemetry=log)

    def close() -> None:
        sender.close()
        log.close()

    sink = CallbackSink(sender.write, rate=16_000, on_close=close)
    sink.sender = sender  # a flashed bundle's transport settings reach it (edge/liveslot.py)
    return sink


def _source_name(value: str) -> str:
    from edge.soundserver import NAME_RE

    if not NAME_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r}: use 1-64 letters, digits, '_', '.', '-'")
    return value


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@click.command("virtual-mic")
@click.option("--source", "-s", "capture",
              help="Sound-server source to denoise (`pactl list short sources`). "
                   "Default: the server's default source.")
@click.option("--name", "-n", default="hushlink_denoised", show_default=True,
              callback=lambda ctx, param, value: _source_name(value),
              help="Name of the virtual source applications record from.")
@click.option("--description", default="hushlink denoised microphone", show_default=True,
              help="The name applications show in their microphone list.")
@click.option("--rate", default=48_000, show_default=True, type=Number(int, 8_000, 192_000),
              help="Capture and virtual-source rate in Hz.")
@click.option("--buffer-ms", default=40, show_default=True, type=Number(int, 10, 1000),
              help="Output buffer towards the sound server: more survives a busier CPU, "
                   "at that much more latency.")
@click.option("--duration", "-d", type=Number(float, lo=0.1),
              help="Stop after this many seconds (default: until Ctrl-C/SIGTERM).")
@click.option("--profile", "-p", "profile_name", default="generic-linux", show_default=True,
              help="Hardware profile name or .toml path (model threads, affinity).")
@click.option("--model", "-m", "model_path", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--bypass", is_flag=True, help="Start in bypass (SIGUSR1 toggles at runtime).")
@click.option("--quiet", "-q", is_flag=True, help="No live status line.")
def virtual_mic_command(capture, name, description, rate, buffer_ms, duration, profile_name,
                        model_path, bypass, quiet) -> None:
    """Offer a denoised microphone to every application (PulseAudio or PipeWire).

    Loads a null sink and a source remapped from its monitor (pactl), denoises the chosen
    source into the sink with the live loop (audio in and out through parec and pacat), and
    unloads exactly those modules at exit (SIGINT/SIGTERM; a guard process unloads them if
    this one is killed). Applications pick the source by its description. Prints the live
    loop's JSON summary at exit.
    """
    import signal

    from edge.live import startup_toggles
    from edge.sinks import ProcessSink
    from edge.soundserver import capture_argv, playback_argv, virtual_mic
    from edge.sources import ProcessSource

    def interrupt(signum, frame):  # until the loop's own handlers: unwind, unload, exit
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, interrupt)
    try:
        with startup_toggles() as pending, \
                virtual_mic(name, capture, description, rate,
                            warn=lambda m: err_console.print(f"edge-denoise virtual-mic: {m}")
                            ) as mic:
            source = ProcessSource(capture_argv(mic.capture_source, rate), rate, rate // 100,
                                   what=f"capture from {mic.capture_source}")
            sink = ProcessSink(playback_argv(mic.sink, rate, buffer_ms), rate,
                               buffer_s=buffer_ms / 1e3, what=f"playback into {mic.sink}")
            err_console.print(f"edge-denoise virtual-mic: source {mic.source!r} "
                              f"(\"{mic.description}\") denoises {mic.capture_source!r}; "
                              "pick it as the microphone in any application")
            try:
                summary = run_live(duration=duration, profile_name=profile_name,
                                   model_path=model_path, play=False, bypass=bypass,
                                   quiet=quiet, pending_toggles=pending, source=source,
                                   extra_sinks=[sink])
            except BaseException:  # e.g. a model that does not load: the loop never ran
                sink.close()
                raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    summary["virtual_mic"] = {"source": mic.source, "sink": mic.sink,
                              "capture_source": mic.capture_source,
                              "modules": list(mic.modules)}
    click.echo(json.dumps(summary, indent=1))
    if summary["error"]:
        err_console.print(f"Error: {summary['error']}")
        sys.exit(1)
