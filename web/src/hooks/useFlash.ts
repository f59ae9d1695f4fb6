import { useCallback, useEffect, useRef, useState } from "react";

export interface FlashProps {
  /** `flash-up-0`, `flash-down-1`, `flash-0`, ... or "" when not flashing. */
  className: string;
  /** Drops the class once the animation has run, so re-showing a hidden element (the phone
   * layout toggles panels with `display: none`) does not replay old flashes. */
  onAnimationEnd: () => void;
}

/**
 * A CSS class that flashes an element briefly each time `value` changes.
 *
 * Numbers flash green when they rise and red when they fall; other values flash neutral. Two
 * identical keyframe sets alternate (`-0` / `-1`) so that back-to-back changes in the same
 * direction restart the animation instead of being swallowed. The first value never flashes.
 */
export function useFlash(value: unknown): FlashProps {
  const previous = useRef(value);
  const [flash, setFlash] = useState<{ kind: string; n: number; on: boolean } | null>(null);
  useEffect(() => {
    const before = previous.current;
    previous.current = value;
    if (Object.is(before, value) || before === undefined || value === undefined) return;
    let kind = "flash";
    if (typeof before === "number" && typeof value === "number") {
      kind = value > before ? "flash-up" : "flash-down";
    }
    setFlash((f) => ({ kind, n: f ? f.n + 1 : 0, on: true }));
  }, [value]);
  const onAnimationEnd = useCallback(() => setFlash((f) => (f && f.on ? { ...f, on: false } : f)), []);
  return { className: flash?.on ? `${flash.kind}-${flash.n % 2}` : "", onAnimationEnd };
}
