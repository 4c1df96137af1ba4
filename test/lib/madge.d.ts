// The part of madge's API (https://github.com/pahen/madge) that test/unit/module-graph.test.ts uses;
// madge ships no type declarations.
declare module 'madge' {
  interface MadgeConfig {
    fileExtensions?: string[];
    tsConfig?: string;
    detectiveOptions?: Record<string, Record<string, unknown>>;
  }
  interface MadgeInstance {
    /** file -> the files it imports, relative to the base directory */
    obj(): Record<string, string[]>;
    circular(): string[][];
  }
  export default function madge(path: string, config?: MadgeConfig): Promise<MadgeInstance>;
}
