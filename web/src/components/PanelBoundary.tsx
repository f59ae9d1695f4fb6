import { Component, type ReactNode } from "react";

/**
 * Contains a failing query (a server error thrown by `useQuery`) to its panel, so one bad
 * function does not blank the whole screen. Remounted with a new `key` per market.
 */
export class PanelBoundary extends Component<{ name: string; children: ReactNode }, { error: Error | null }> {
  override state: { error: Error | null } = { error: null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  override render() {
    if (this.state.error) {
      return (
        <section className="panel panel-error" role="alert">
          <header className="panel-head">
            <h2>{this.props.name}</h2>
          </header>
          <p className="error-text">{this.state.error.message}</p>
          <button type="button" className="tab" onClick={() => this.setState({ error: null })}>
            Retry
          </button>
        </section>
      );
    }
    return this.props.children;
  }
}
