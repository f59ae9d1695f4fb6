import type { ReactNode } from "react";
import { useFlash } from "../hooks/useFlash";

/** Wraps `children` in a span that flashes when `value` changes. */
export function Flash({
  value,
  className = "",
  children,
  ...rest
}: {
  value: unknown;
  className?: string;
  children: ReactNode;
  [data: `data-${string}`]: string | undefined;
}) {
  const flash = useFlash(value);
  return (
    <span className={`${className} ${flash.className}`.trim()} onAnimationEnd={flash.onAnimationEnd} {...rest}>
      {children}
    </span>
  );
}
