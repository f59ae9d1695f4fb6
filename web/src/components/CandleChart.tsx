import { useEffect, useRef, useState } from "react";
import type { IChartApi, ISeriesApi, UTCTimestamp } from "lightweight-charts";
import { priceDecimals } from "../format";
import { useCandles } from "../hooks/useCandles";
import type { Candle, CandleInterval } from "../types";

const INTERVALS: CandleInterval[] = ["1m", "5m", "1h"];

export interface SeriesData {
  candles: Array<{ time: UTCTimestamp; open: number; high: number; low: number; close: number }>;
  volumes: Array<{ time: UTCTimestamp; value: number; color: string }>;
}

const UP = "#2fd18b";
const MIN_BARS = 60;
const DOWN = "#f2545b";

/**
 * Candles as lightweight-charts wants them: ascending, one per time, times in seconds.
 * lightweight-charts draws times as UTC, so they are shifted by the local offset
 * (`offsetMinutes`, as `Date#getTimezoneOffset` gives it) to label the axis in local time.
 */
export function toSeries(candles: readonly Candle[], offsetMinutes: number): SeriesData {
  const byTime = new Map<number, Candle>();
  for (const c of candles) byTime.set(Math.floor(c.start / 1000) - offsetMinutes * 60, c);
  const times = [...byTime.keys()].sort((a, b) => a - b);
  const out: SeriesData = { candles: [], volumes: [] };
  for (const t of times) {
    const c = byTime.get(t)!;
    const time = t as UTCTimestamp;
    out.candles.push({ time, open: c.open, high: c.high, low: c.low, close: c.close });
    out.volumes.push({ time, value: c.volume, color: c.close >= c.open ? `${UP}55` : `${DOWN}55` });
  }
  return out;
}

type Bar = SeriesData["candles"][number];

/**
 * The bars to pass to `series.update()` to go from `prev` to `next`, or null when the change
 * is not a tail change and the series must be `setData()` again. A new trade changes only the
 * last bar or appends one, and `update()` redraws far less than `setData()` of every bar, which
 * keeps the main thread free for the next tick.
 */
export function tailUpdate(prev: readonly Bar[], next: readonly Bar[]): Bar[] | null {
  if (prev.length === 0 || next.length < prev.length || next.length > prev.length + 1) return null;
  const same = (a: Bar, b: Bar) =>
    a.time === b.time && a.open === b.open && a.high === b.high && a.low === b.low && a.close === b.close;
  // Every bar before the old last one must be unchanged (including after a window shift).
  for (let i = 0; i < prev.length - 1; i++) if (!same(prev[i]!, next[i]!)) return null;
  if (prev.at(-1)!.time !== next[prev.length - 1]!.time) return null;
  return next.slice(prev.length - 1).filter((bar, i) => i > 0 || !same(bar, prev.at(-1)!));
}

interface ChartHandle {
  chart: IChartApi;
  candles: ISeriesApi<"Candlestick">;
  volumes: ISeriesApi<"Histogram">;
}

/**
 * A live candlestick chart of one market, with volume bars: a day of 1-minute candles and more
 * (history from the first second), of which only the newest are pushed again with each trade
 * (`useCandles`).
 */
export function CandleChart({ ticker }: { ticker: string }) {
  const [interval, setChartInterval] = useState<CandleInterval>("1m");
  const { candles, complete } = useCandles(ticker, interval);
  const container = useRef<HTMLDivElement>(null);
  const handle = useRef<ChartHandle | null>(null);
  const [ready, setReady] = useState(false);
  const [chartError, setChartError] = useState<string | null>(null);
  const fitted = useRef<string>("");
  const shown = useRef<{ key: string; bars: Bar[] }>({ key: "", bars: [] });
  const precision = useRef(0);

  useEffect(() => {
    let disposed = false;
    // Loaded on demand: the chart library is the largest dependency and the rest of the
    // screen should not wait for it.
    import("lightweight-charts")
      .then((lc) => {
        if (disposed || !container.current) return;
        const chart = lc.createChart(container.current, {
          autoSize: true,
          layout: {
            background: { type: lc.ColorType.Solid, color: "transparent" },
            textColor: "#8b93a7",
            fontFamily: "inherit",
            fontSize: 11,
          },
          grid: { vertLines: { color: "#1b2130" }, horzLines: { color: "#1b2130" } },
          rightPriceScale: { borderColor: "#262d3d" },
          timeScale: { borderColor: "#262d3d", timeVisible: true, secondsVisible: false },
          crosshair: { mode: lc.CrosshairMode.Normal },
        });
        const candleSeries = chart.addSeries(lc.CandlestickSeries, {
          upColor: UP,
          downColor: DOWN,
          borderVisible: false,
          wickUpColor: UP,
          wickDownColor: DOWN,
          priceFormat: { type: "price", precision: 2, minMove: 0.01 },
        });
        const volumeSeries = chart.addSeries(lc.HistogramSeries, {
          priceScaleId: "",
          priceFormat: { type: "volume" },
          lastValueVisible: false,
          priceLineVisible: false,
        });
        volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
        candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
        handle.current = { chart, candles: candleSeries, volumes: volumeSeries };
        setReady(true);
      })
      .catch((err: unknown) => {
        if (!disposed) setChartError(err instanceof Error ? err.message : String(err));
      });
    return () => {
      disposed = true;
      handle.current?.chart.remove();
      handle.current = null;
      shown.current = { key: "", bars: [] };
      precision.current = 0;
    };
  }, []);

  useEffect(() => {
    const h = handle.current;
    if (!ready || !h || candles === undefined) return;
    const data = toSeries(candles ?? [], new Date().getTimezoneOffset());
    const decimals = priceDecimals(data.candles.flatMap((c) => [c.open, c.high, c.low, c.close]));
    if (precision.current !== decimals) {
      precision.current = decimals;
      h.candles.applyOptions({ priceFormat: { type: "price", precision: decimals, minMove: 10 ** -decimals } });
    }
    const key = `${ticker}/${interval}`;
    const tail = shown.current.key === key ? tailUpdate(shown.current.bars, data.candles) : null;
    if (tail === null) {
      h.candles.setData(data.candles);
      h.volumes.setData(data.volumes);
    } else {
      const from = data.candles.length - tail.length;
      tail.forEach((bar, i) => {
        h.candles.update(bar);
        h.volumes.update(data.volumes[from + i]!);
      });
    }
    shown.current = { key, bars: data.candles };
    if (fitted.current !== key && complete && data.candles.length > 0) {
      fitted.current = key;
      // With few candles, fitting them to the width draws absurdly wide bars: show a window of
      // MIN_BARS slots with the data at its right edge instead.
      const n = data.candles.length;
      if (n < MIN_BARS) h.chart.timeScale().setVisibleLogicalRange({ from: n - MIN_BARS, to: n + 1 });
      else h.chart.timeScale().fitContent();
    }
  }, [ready, candles, complete, ticker, interval]);

  // null: the store does not know this market.
  const empty = candles === null || (candles !== undefined && candles.length === 0);
  return (
    <section className="panel chart" data-testid="chart" aria-label="Price chart">
      <header className="panel-head">
        <h2>Chart</h2>
        <div className="tabs" role="tablist" aria-label="Candle interval">
          {INTERVALS.map((i) => (
            <button
              key={i}
              role="tab"
              aria-selected={i === interval}
              className={i === interval ? "tab tab-active" : "tab"}
              onClick={() => setChartInterval(i)}
            >
              {i}
            </button>
          ))}
        </div>
      </header>
      <div className="chart-body">
        <div className="chart-canvas" ref={container} data-testid="chart-canvas" data-candles={candles?.length ?? ""} />
        {chartError ? <div className="chart-overlay empty">Chart unavailable: {chartError}</div> : null}
        {!chartError && (candles === undefined || !ready) ? (
          <div className="chart-overlay" aria-busy="true">
            <span className="skeleton skeleton-chart" />
          </div>
        ) : null}
        {!chartError && ready && empty ? (
          <div className="chart-overlay empty" data-testid="chart-empty">
            {candles === null ? "Unknown market" : "No trades yet: candles appear with the first trade"}
          </div>
        ) : null}
      </div>
    </section>
  );
}
